// Generations and rebuilds on the Model accuracy page: which generation of the topic is live (and since when, by
// whom, why), every generation with its topic and lineage, every rebuild with its progress (files, rows, records
// trained), the gate's numbers and the decision, and the newest rebuild's accuracy curve beside the live lineage's
// (window accuracy over event time). Read-only. Built on model_accuracy.js's parts; text is only ever set as text.
"use strict";

(function () {
  const page = window.modelAccuracyPage;
  const { el, getJSON, badge, fmtIso, fmtNum } = page;
  const fmtAcc = (v) => (v === null || v === undefined ? "" : Number(v).toFixed(4));
  const COLORS = { live: "#1f6fb5", rebuild: "#c2410c" };
  let chart = null;

  // The page may show a lineage ("default.g2"); generations belong to the model name it was rebuilt from.
  const modelOf = (name) => (name || "default").replace(/\.g\d+$/, "");

  function progress(r) {
    const parts = [`${fmtNum(r.files_ingested)} / ${fmtNum(r.files_planned)} files`, `${fmtNum(r.rows_ingested)} rows`,
      `${fmtNum(r.records_trained)} records trained`];
    if (r.files_left_out) parts.push(`${fmtNum(r.files_left_out)} left out`);
    return parts.join(" · ");
  }

  function gateText(r) {
    const g = r.gate;
    if (!g || g.candidate_accuracy === undefined) return "";
    return `${g.candidate_model || r.lineage} v${r.candidate_version ?? "?"} ${fmtAcc(g.candidate_accuracy)} vs ` +
      `${g.champion_model || ""} v${g.champion_version} ${fmtAcc(g.champion_accuracy)} on ${fmtNum(g.rows)} rows` +
      (g.mcnemar_p === null || g.mcnemar_p === undefined ? "" : ` (McNemar p ${Number(g.mcnemar_p).toPrecision(2)})`);
  }

  function renderCurves(curves) {
    const canvas = document.getElementById("rebuild-chart");
    const box = document.getElementById("rebuild-chart-box");
    if (chart) { chart.destroy(); chart = null; }
    box.hidden = !curves || (!curves.live.x.length && !curves.rebuild.x.length);
    if (box.hidden) return;
    const datasets = [["live", curves.live], ["rebuild", curves.rebuild]].filter(([, c]) => c.x.length).map(([key, c]) => ({
      label: `${key === "live" ? "Live" : "Rebuild"}: ${c.lineage} (window accuracy)`, kind: key,
      data: c.x.map((x, i) => ({ x, y: c.y[i] })), parsing: false, borderColor: COLORS[key],
      backgroundColor: COLORS[key], borderWidth: 1.3, pointRadius: 0, pointHoverRadius: 3,
    }));
    chart = new window.Chart(canvas, {
      type: "line", data: { datasets },
      options: {
        animation: false, maintainAspectRatio: false, responsive: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: "event time (UTC)" },
               ticks: { callback: (v) => new Date(v).toISOString().slice(0, 10), maxRotation: 0, autoSkipPadding: 16 } },
          y: { title: { display: true, text: "accuracy" } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 14, boxHeight: 2 } } },
      },
    });
  }

  async function loadGenerations() {
    const data = await getJSON("generations", { model: modelOf(page.state.model) });
    const summary = document.getElementById("generations-summary");
    summary.replaceChildren("Live generation ", el("b", {}, String(data.live)), ` of ${data.base_topic}: model `,
      el("b", {}, data.model_name), " is served by ", el("a", { href: `./?model=${encodeURIComponent(data.served_by)}` },
        data.served_by), data.served_version ? ` v${data.served_version}` : "");
    if (data.pointer) {
      summary.append(` · switched ${fmtIso(data.pointer.changed_at)} by ${data.pointer.changed_by}`,
        data.pointer.reason ? `: ${data.pointer.reason}` : "",
        data.pointer.previous ? ` (from generation ${data.pointer.previous})` : "");
    }
    document.querySelector("#generations tbody").replaceChildren(...data.generations.map((g) => el("tr",
      { "data-generation": g.generation, class: g.live ? "is-champion" : "" },
      el("td", {}, el("b", {}, String(g.generation))), el("td", {}, badge(g.status)), el("td", {}, g.topic),
      el("td", {}, g.lineage ? el("a", { href: `./?model=${encodeURIComponent(g.lineage)}` }, g.lineage) : "—"),
      el("td", { class: "num" }, g.champion ? `v${g.champion}` : ""), el("td", {}, g.rebuild_id ? `#${g.rebuild_id}` : ""),
      el("td", {}, fmtIso(g.changed_at)))));
    const rebuilds = document.querySelector("#rebuilds tbody");
    rebuilds.replaceChildren(...data.rebuilds.map((r) => el("tr", { "data-rebuild": r.id, "data-state": r.state },
      el("td", {}, el("b", {}, `#${r.id}`)), el("td", {}, String(r.generation)), el("td", {}, badge(r.state)),
      el("td", { class: "wrap" }, r.reason), el("td", {}, progress(r)), el("td", { class: "wrap" }, gateText(r)),
      el("td", { class: "wrap" }, r.decision_reason || r.message || ""), el("td", {}, fmtIso(r.decided_at || r.updated_at)))));
    if (!data.rebuilds.length) {
      rebuilds.append(el("tr", {}, el("td", { colspan: 8, class: "muted" },
        "No rebuild yet: a file older than the live data, or a manual run of rebuild_model with a reason, starts one.")));
    }
    renderCurves(data.curves);
    window.modelAccuracy.generations = {
      live: data.live, servedBy: data.served_by,
      rows: data.generations.map((g) => ({ generation: g.generation, status: g.status, lineage: g.lineage })),
      rebuilds: data.rebuilds.map((r) => ({ id: r.id, generation: r.generation, state: r.state, decision: r.decision,
        filesIngested: r.files_ingested, filesPlanned: r.files_planned, recordsTrained: r.records_trained })),
      curves: data.curves ? { live: data.curves.live.x.length, rebuild: data.curves.rebuild.x.length } : null,
    };
  }

  page.loaders.push([loadGenerations, "generations-summary"]);
})();
