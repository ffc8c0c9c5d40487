// The Model accuracy page: fetches the plugin's JSON API (relative URLs, so it works under any base path and
// inside the Airflow UI's iframe) and renders it with Chart.js. Text from the API is only ever set as text.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const state = {
    model: params.get("model") || "",
    x: params.get("x") === "event_time" ? "event_time" : "records",
    dagId: params.get("dag_id") || "",
    dagRunId: params.get("dag_run_id") || "",
    chart: null,
  };
  // Exposed for the browser test and for debugging in the console.
  window.modelAccuracy = { ready: false, points: {}, runs: 0, totalBatches: 0, chart: null, error: null,
    versions: null, alerts: null, promotions: 0, versionLines: {}, lastAction: null };

  const COLORS = {
    window_accuracy: ["#1f6fb5", "#7fb0dd"],
    prequential_accuracy: ["#e8710a", "#f5b077"],
    baseline: "#2ca02c",
    bayes: "#6b7280",
    drift: "#d62728",
    boundary: "#94a3b8",
    promotion: "#16a34a",
    rollback: "#9333ea",
    champion: "#1e40af",
    candidate: "#c2410c",
  };
  const LABELS = { window_accuracy: "Window accuracy", prequential_accuracy: "Prequential accuracy" };
  const numberFormat = new Intl.NumberFormat("en-US");
  const compactFormat = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function query(extra) {
    const q = new URLSearchParams();
    if (state.model) q.set("model", state.model);
    if (state.dagId) q.set("dag_id", state.dagId);
    if (state.dagRunId) q.set("dag_run_id", state.dagRunId);
    for (const [k, v] of Object.entries(extra || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    return q.toString();
  }

  async function getJSON(path, extra) {
    const qs = query(extra);
    const response = await fetch(`api/${path}${qs ? "?" + qs : ""}`, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = JSON.stringify((await response.json()).detail); } catch (_) { /* not JSON */ }
      throw new Error(`${path}: HTTP ${response.status} ${detail}`);
    }
    return response.json();
  }

  const fmtX = (v) => state.x === "event_time" ? fmtTime(v) : compactFormat.format(v);
  const fmtXLong = (v) => state.x === "event_time" ? fmtTime(v) : `${numberFormat.format(v)} records`;
  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "";
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }
  function fmtIso(iso) { return iso ? iso.slice(0, 19).replace("T", " ") : ""; }
  function fmtNum(v, digits) {
    if (v === null || v === undefined) return "";
    return digits === undefined ? numberFormat.format(v) : Number(v).toFixed(digits);
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "";
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  const badge = (text) => el("span", { class: `badge ${text || ""}` }, text || "");
  const airflowRunUrl = (dagId, runId) => `../dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`;
  function sliceUrl(dagId, runId) {
    const q = new URLSearchParams();
    if (state.model) q.set("model", state.model);
    if (state.x !== "records") q.set("x", state.x);
    if (dagId) q.set("dag_id", dagId);
    if (runId) q.set("dag_run_id", runId);
    return `./?${q.toString()}`;
  }

  // ------------------------------------------------------------------------------------------- chart
  function buildDatasets(curve) {
    const datasets = [];
    let yMin = Infinity, yMax = -Infinity, xMin = Infinity, xMax = -Infinity;
    const runLabel = (i) => {
      const run = curve.runs[i];
      return run ? (run.dag_run_id || run.run_id) : "";
    };
    for (const name of ["window_accuracy", "prequential_accuracy"]) {
      const s = curve.series[name];
      if (!s || s.x.length === 0) continue;
      const data = new Array(s.x.length);
      for (let i = 0; i < s.x.length; i++) {
        data[i] = { x: s.x[i], y: s.y[i], run: s.run[i] };
        if (s.y[i] < yMin) yMin = s.y[i];
        if (s.y[i] > yMax) yMax = s.y[i];
      }
      xMin = Math.min(xMin, s.x[0]);
      xMax = Math.max(xMax, s.x[s.x.length - 1]);
      const [even, odd] = COLORS[name];
      datasets.push({
        label: LABELS[name], kind: "series", data, parsing: false, normalized: true,
        borderColor: even, backgroundColor: even, borderWidth: 1.3, pointRadius: 0, pointHoverRadius: 3,
        // One line per training run, joined into one curve: alternate shades mark where a run begins.
        segment: { borderColor: (ctx) => (ctx.p1.raw.run % 2 === 0 ? even : odd) },
        runLabel,
      });
    }
    if (!Number.isFinite(xMin)) return { datasets, empty: true };
    const flat = (label, value, color, dash, kind) => {
      yMin = Math.min(yMin, value); yMax = Math.max(yMax, value);
      datasets.push({
        label: `${label} ${value.toFixed(3)}`, kind, data: [{ x: xMin, y: value }, { x: xMax, y: value }],
        parsing: false, borderColor: color, backgroundColor: color, borderDash: dash, borderWidth: 1.5,
        pointRadius: 0, pointHoverRadius: 0,
      });
    };
    if (curve.baseline) flat("Batch baseline", curve.baseline.accuracy, COLORS.baseline, [6, 4], "baseline");
    if (curve.bayes_accuracy !== null && curve.bayes_accuracy !== undefined) {
      flat("Bayes-optimal", curve.bayes_accuracy, COLORS.bayes, [2, 3], "bayes");
    }
    // The champion's and the latest candidate's accuracy (the gate's pair when it judged them on the same rows).
    const lines = curve.version_accuracy || {};
    if (lines.champion) flat(`Champion v${lines.champion.version}`, lines.champion.accuracy, COLORS.champion, [], "champion");
    if (lines.candidate) {
      flat(`Latest candidate v${lines.candidate.version} (${lines.candidate.status})`, lines.candidate.accuracy,
        COLORS.candidate, [8, 3], "candidate");
    }
    // Round the y range to whole ticks, so the vertical markers span the plot and the axis ends on a label.
    const step = yMax - yMin > 0.2 ? 0.05 : 0.01;
    const pad = Math.max(0.005, (yMax - yMin) * 0.03);
    const lo = Math.max(0, +(Math.floor((yMin - pad) / step) * step).toFixed(4));
    const hi = Math.min(1, +(Math.ceil((yMax + pad) / step) * step).toFixed(4));
    // Vertical markers are ordinary line datasets: (x, lo) -> (x, hi), broken by a null between markers.
    const verticals = (xs, extras) => xs.flatMap((x, i) => [
      { x, y: lo, ...(extras ? extras[i] : {}) }, { x, y: hi, ...(extras ? extras[i] : {}) }, { x, y: null },
    ]);
    if (curve.drift_events.length) {
      datasets.push({
        label: `Drift events (${curve.drift_events.length})`, kind: "drift",
        data: verticals(curve.drift_events.map((d) => d.x), curve.drift_events.map((d) => ({ drift: d }))),
        parsing: false, spanGaps: false, borderColor: COLORS.drift, backgroundColor: COLORS.drift,
        borderWidth: 1, borderDash: [4, 3], pointStyle: "triangle", clip: false,
        pointRadius: (ctx) => (ctx.dataIndex % 3 === 1 ? 5 : 0), pointHoverRadius: 6,
      });
    }
    const switches = (curve.promotions || []).filter((p) => p.x >= xMin && p.x <= xMax);
    for (const [action, label, color] of [["promoted", "Promotions", COLORS.promotion], ["rolled_back", "Rollbacks", COLORS.rollback]]) {
      const marks = switches.filter((p) => p.action === action);
      if (!marks.length) continue;
      datasets.push({
        label: `${label} (${marks.length})`, kind: "promotion",
        data: verticals(marks.map((p) => p.x), marks.map((p) => ({ promotion: p }))),
        parsing: false, spanGaps: false, borderColor: color, backgroundColor: color, borderWidth: 1.5,
        pointStyle: "rectRot", clip: false, pointRadius: (ctx) => (ctx.dataIndex % 3 === 1 ? 5 : 0), pointHoverRadius: 6,
      });
    }
    if (curve.runs.length > 1) {
      datasets.push({
        label: "Run boundaries", kind: "boundary", hidden: true,
        data: verticals(curve.runs.slice(1).map((r) => r.x_min)), parsing: false, spanGaps: false,
        borderColor: COLORS.boundary, borderWidth: 1, pointRadius: 0, pointHoverRadius: 0,
      });
    }
    return { datasets, lo, hi, xMin, xMax, empty: false };
  }

  function renderChart(curve) {
    const canvas = document.getElementById("chart");
    const { datasets, lo, hi, xMin, xMax } = buildDatasets(curve);
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    const config = {
      type: "line",
      data: { datasets },
      options: {
        animation: false, maintainAspectRatio: false, responsive: true,
        layout: { padding: { top: 6, right: 8 } },  // room for the drift markers at the plot's edges
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: {
            type: "linear", min: xMin, max: xMax,
            title: { display: true, text: state.x === "event_time" ? "event time (UTC)" : "records seen" },
            // The axis is cut at the data's ends; only "nice" values get a label.
            ticks: { callback: (v) => fmtX(v), maxRotation: 0, autoSkipPadding: 16, includeBounds: false },
          },
          y: { min: lo, max: hi, ticks: { includeBounds: false }, title: { display: true, text: "accuracy" } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 14, boxHeight: 2 } },
          tooltip: {
            filter: (item) => item.dataset.kind === "series" || (item.dataset.kind === "drift" && item.raw.drift)
              || (item.dataset.kind === "promotion" && item.raw.promotion),
            callbacks: {
              title: (items) => (items.length ? fmtXLong(items[0].raw.x) : ""),
              label: (item) => {
                if (item.dataset.kind === "promotion") {
                  const p = item.raw.promotion;
                  return `${p.action === "promoted" ? "promoted" : "rolled back to"} v${p.version} by ${p.actor} at ${fmtIso(p.at)}: ${p.reason || ""}`;
                }
                if (item.dataset.kind === "drift") {
                  const d = item.raw.drift;
                  if (d.reaction === "recall") {  // accuracy_before: the live model's, accuracy_after: the recalled one's
                    return `earlier concept recalled: the stored model predicted the newest rows at ${fmtNum(d.accuracy_after, 3)}, the live one at ${fmtNum(d.accuracy_before, 3)}`;
                  }
                  const acc = d.accuracy_after === null ? "" : `, accuracy ${fmtNum(d.accuracy_before, 3)} → ${fmtNum(d.accuracy_after, 3)}`;
                  return `drift (${d.detector}, ${d.reaction})${acc}`;
                }
                return `${item.dataset.label}: ${item.raw.y.toFixed(4)} (run ${item.dataset.runLabel(item.raw.run)})`;
              },
            },
          },
        },
      },
    };
    state.chart = new window.Chart(canvas, config);
    window.modelAccuracy.chart = state.chart;
  }

  function renderSummary(curve) {
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    const shown = Object.values(curve.series).reduce((m, s) => Math.max(m, s.x.length), 0);
    if (curve.total_batches === 0) {
      summary.append(state.dagRunId ? "No training history for this DAG run." : "No training history yet.");
      return;
    }
    const parts = [
      [el("b", {}, numberFormat.format(curve.total_batches)), " mini-batches"],
      [el("b", {}, String(curve.runs.length)), curve.runs.length === 1 ? " run" : " runs"],
      shown < curve.total_batches ? [`${numberFormat.format(shown)} points per series shown (downsampled)`] : null,
      curve.baseline ? ["batch baseline ", el("b", {}, curve.baseline.accuracy.toFixed(3))] : null,
      curve.bayes_accuracy !== null ? ["Bayes-optimal ", el("b", {}, curve.bayes_accuracy.toFixed(3))] : null,
      [el("b", {}, String(curve.drift_events.length)), " drift events"],
    ].filter(Boolean);
    parts.forEach((p, i) => { if (i) summary.append(" · "); summary.append(...p); });
  }

  async function loadChart() {
    const curve = await getJSON("accuracy", { x: state.x });
    renderSummary(curve);
    document.querySelector(".chart-box").hidden = curve.total_batches === 0;
    renderChart(curve);
    const points = {};
    for (const [name, s] of Object.entries(curve.series)) points[name] = s.x.length;
    Object.assign(window.modelAccuracy, {
      points, runs: curve.runs.length, totalBatches: curve.total_batches,
      driftEvents: curve.drift_events.length, baseline: curve.baseline, bayes: curve.bayes_accuracy,
      promotions: state.chart.data.datasets.filter((d) => d.kind === "promotion")
        .reduce((n, d) => n + d.data.filter((p) => p.promotion && p.y !== null).length / 2, 0),
      versionLines: curve.version_accuracy || {},
      rendered: state.chart.data.datasets.filter((d) => d.kind === "series")
        .reduce((n, d) => n + d.data.length, 0),
    });
  }

  // -------------------------------------------------------------------------------------- tables
  async function loadRuns() {
    const data = await getJSON("runs", { limit: 200 });
    const body = document.querySelector("#runs tbody");
    body.replaceChildren();
    if (data.runs.length === 0) body.append(el("tr", {}, el("td", { colspan: 11, class: "muted" }, "No training runs.")));
    for (const r of data.runs) {
      const dagRun = r.dag_id && r.dag_run_id
        ? [el("a", { href: airflowRunUrl(r.dag_id, r.dag_run_id), target: "_top", title: `Open ${r.dag_id} / ${r.dag_run_id} in Airflow` }, r.dag_run_id),
           r.kind === "batch_baseline" ? null
             : [" ", el("a", { href: sliceUrl(r.dag_id, r.dag_run_id), class: "muted", title: "Show this run's slice of the chart" }, "[chart]")]]
        : (r.dag_run_id || r.run_id.slice(0, 12));
      body.append(el("tr", { "data-run-id": r.run_id },
        el("td", {}, dagRun),
        el("td", {}, r.kind),
        el("td", {}, fmtIso(r.started_at)),
        el("td", { class: "num" }, fmtDuration(r.duration_s)),
        el("td", { class: "num" }, fmtNum(r.records)),
        el("td", { class: "num" }, r.records_per_s === null ? "" : fmtNum(Math.round(r.records_per_s))),
        el("td", { class: "wrap" }, r.offsets_from || r.offsets_to ? `${r.offsets_from} → ${r.offsets_to}` : ""),
        el("td", {}, r.stop_reason || ""),
        el("td", { title: r.checkpoint_id || "" }, r.checkpoint_id ? r.checkpoint_id.slice(0, 12) : ""),
        el("td", { title: r.message || "" }, badge(r.status)),
        el("td", { class: "num" }, fmtNum(r.window_accuracy, 4)),
      ));
    }
    const more = document.getElementById("runs-more");
    more.hidden = data.total <= data.runs.length;
    more.textContent = `Newest ${data.runs.length} of ${numberFormat.format(data.total)} runs shown.`;
  }

  async function loadKafka() {
    const box = document.getElementById("kafka");
    const k = await getJSON("kafka");
    box.replaceChildren();
    if (!k.available) {
      box.append(el("p", { class: "unavailable" }, "Kafka unavailable"), el("p", { class: "muted" }, k.error || ""));
      return;
    }
    box.append(el("dl", { class: "kv" },
      el("dt", {}, "group"), el("dd", {}, k.consumer_group),
      el("dt", {}, "topic"), el("dd", {}, k.topic),
      el("dt", {}, "total lag"), el("dd", {}, k.total_lag === null ? "—" : el("b", {}, fmtNum(k.total_lag))),
      el("dt", {}, "dead letters"), el("dd", {}, `${fmtNum(k.dead_letters)} in ${k.dlq_topic}`),
    ));
    if (k.error) box.append(el("p", { class: "unavailable" }, k.error));
    if (k.partitions.length) {
      box.append(el("table", {},
        el("thead", {}, el("tr", {}, ["partition", "committed", "end", "lag"].map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
        el("tbody", {}, k.partitions.map((p) => el("tr", {},
          el("td", {}, String(p.partition)), el("td", { class: "num" }, p.committed === null ? "none" : fmtNum(p.committed)),
          el("td", { class: "num" }, fmtNum(p.end)), el("td", { class: "num" }, fmtNum(p.lag))))),
      ));
    }
  }

  async function loadIngest() {
    const box = document.getElementById("ingest");
    const data = await getJSON("ingest", { limit: 50 });
    box.replaceChildren();
    const t = data.totals;
    box.append(el("p", { class: "summary" },
      el("b", {}, fmtNum(t.files)), " files · ", el("b", {}, fmtNum(t.rows_valid)), " rows · ",
      el("b", {}, fmtNum(t.quarantined)), " quarantined rows"));
    if (!data.files.length) return;
    box.append(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["file", "status", "rows", "quarantined", "attempts", "updated (UTC)"]
        .map((h, i) => el("th", { class: i >= 2 && i <= 4 ? "num" : "" }, h)))),
      el("tbody", {}, data.files.map((f) => el("tr", {},
        el("td", { title: f.path }, f.file), el("td", { title: f.message || "" }, badge(f.status)),
        el("td", { class: "num" }, fmtNum(f.rows_valid)), el("td", { class: "num" }, fmtNum(f.quarantined)),
        el("td", { class: "num" }, fmtNum(f.attempts)), el("td", {}, fmtIso(f.updated_at))))),
    )));
    if (data.total > data.files.length) box.append(el("p", { class: "muted" }, `Newest ${data.files.length} of ${fmtNum(data.total)} files shown.`));
  }

  // The parts other scripts of the page build on (lifecycle.js): they add loaders run by loadAll, and setups.
  const page = { el, getJSON, badge, fmtIso, fmtNum, fail, state, loadAll: () => loadAll(), loaders: [], setups: [] };
  window.modelAccuracyPage = page;

  // ---------------------------------------------------------------------------------------- page
  async function loadModels() {
    const select = document.getElementById("model");
    const { models } = await getJSON("models");
    const names = models.map((m) => m.model_name);
    if (!state.model && names.includes("default")) {
      // After a rebuild's switch, "default" is served by its lineage in the live generation (default.g2): show that.
      try { state.model = (await getJSON("generations", { model: "default" })).served_by; } catch (_) { /* older data */ }
    }
    if (!state.model) state.model = names.includes("default") || names.length === 0 ? "default" : names[0];
    if (!names.includes(state.model)) names.unshift(state.model);
    select.replaceChildren(...names.map((n) => el("option", { value: n, selected: n === state.model }, n)));
  }

  function showFilter() {
    const box = document.getElementById("filter");
    if (!state.dagRunId && !state.dagId) { box.hidden = true; return; }
    box.hidden = false;
    box.replaceChildren(el("span", {}, "Showing ", state.dagRunId ? "DAG run " : "DAG ",
      el("b", {}, state.dagRunId || state.dagId),
      state.dagRunId && state.dagId ? [" of ", el("b", {}, state.dagId), " (",
        el("a", { href: airflowRunUrl(state.dagId, state.dagRunId), target: "_top" }, "open in Airflow"), ")"] : null,
      " · ", el("a", { href: sliceUrl("", "") }, "show all runs")));
  }

  function fail(where, error) {
    window.modelAccuracy.error = String(error);
    const box = document.getElementById(where);
    if (!box) return;
    box.hidden = false;
    box.replaceChildren(el("span", { class: "unavailable" }, String(error.message || error)));
  }

  async function loadAll() {
    window.modelAccuracy.ready = false;
    document.body.dataset.ready = "0";
    await Promise.all([
      loadChart().catch((e) => fail("summary", e)),
      loadRuns().catch((e) => fail("runs-more", e)),
      loadIngest().catch((e) => fail("ingest", e)),
      ...page.loaders.map(([load, where]) => load().catch((e) => fail(where, e))),
    ]);
    window.modelAccuracy.ready = true;
    document.body.dataset.ready = "1";
    // Kafka last and on its own: it may take up to a few seconds when the broker is away.
    loadKafka().catch((e) => fail("kafka", e));
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("x").value = state.x;
    showFilter();
    try { await loadModels(); } catch (e) { fail("summary", e); }
    document.getElementById("model").addEventListener("change", (e) => { state.model = e.target.value; loadAll(); });
    document.getElementById("x").addEventListener("change", (e) => {
      state.x = e.target.value;
      loadChart().catch((err) => fail("summary", err));
    });
    document.getElementById("refresh").addEventListener("click", () => loadAll());
    for (const setup of page.setups) setup();
    loadAll();
  });
})();
