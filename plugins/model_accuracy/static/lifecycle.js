// The model lifecycle on the Model accuracy page: the versions table (champion marked, the gate's numbers, who
// decided and why), the audit trail, the alerts, and the promote / rollback actions. Built on model_accuracy.js's
// parts (window.modelAccuracyPage); text from the API is only ever set as text.
"use strict";

(function () {
  const page = window.modelAccuracyPage;
  const { el, getJSON, badge, fmtIso, fmtNum, fail, state } = page;
  const fmtAcc = (v) => (v === null || v === undefined ? "" : Number(v).toFixed(4));
  const fmtP = (v) => (v === null || v === undefined ? "" : v < 0.001 ? Number(v).toExponential(1) : Number(v).toFixed(3));

  async function loadVersions() {
    const data = await getJSON("versions");
    const body = document.querySelector("#versions tbody");
    body.replaceChildren();
    document.getElementById("actions").hidden = !data.can_edit || data.total === 0;
    document.getElementById("actions-denied").hidden = data.can_edit || data.total === 0;
    document.getElementById("rollback").disabled = data.previous === null;
    const summary = document.getElementById("versions-summary");
    summary.replaceChildren();
    if (data.total === 0) {
      summary.append("No model versions yet: each training run registers one.");
    } else {
      summary.append("Champion ", el("b", {}, `v${data.champion}`));
      if (data.pointer) {
        summary.append(` since ${fmtIso(data.pointer.changed_at)} (by ${data.pointer.changed_by}`,
          data.pointer.reason ? `: ${data.pointer.reason}` : "", ")");
      }
      if (data.previous !== null) summary.append(" · previous ", el("b", {}, `v${data.previous}`));
      summary.append(" · ", el("b", {}, String(data.total)), data.total === 1 ? " version" : " versions");
    }
    for (const v of data.versions) {
      const g = v.gate || {};
      const canPromote = data.can_edit && !v.champion && v.on_disk;
      body.append(el("tr", { "data-version": v.version, class: v.champion ? "is-champion" : "" },
        el("td", {}, el("b", {}, `v${v.version}`)),
        el("td", {}, badge(v.champion ? "champion" : v.status), v.on_disk ? null : el("span", { class: "muted" }, " (files pruned)")),
        el("td", {}, fmtIso(v.created_at)),
        el("td", { class: "num" }, fmtNum(v.records_total)),
        el("td", { class: "num" }, fmtAcc(v.window_accuracy)),
        el("td", { class: "num" }, fmtAcc(g.candidate_accuracy)),
        el("td", { class: "num", title: g.champion_version ? `champion v${g.champion_version}` : "" },
          g.champion_accuracy === undefined || g.champion_accuracy === null ? "" : `${fmtAcc(g.champion_accuracy)} (v${g.champion_version})`),
        el("td", { class: "num", title: g.evaluated_on_version ? `held-out rows of v${g.evaluated_on_version}` : "" }, fmtNum(g.rows)),
        el("td", { class: "num" }, fmtP(g.mcnemar_p)),
        el("td", { class: "wrap" }, v.reason || ""),
        el("td", {}, v.decided_by || ""),
        el("td", {}, fmtIso(v.decided_at)),
        el("td", {}, canPromote ? el("button", { type: "button", class: "promote", "data-version": v.version }, "Promote") : ""),
      ));
    }
    const events = document.querySelector("#events tbody");
    events.replaceChildren(...data.events.map((e) => el("tr", {},
      el("td", {}, fmtIso(e.at)), el("td", {}, e.action), el("td", {}, e.version === null ? "" : `v${e.version}`),
      el("td", {}, e.actor), el("td", { class: "wrap" }, e.reason || ""))));
    window.modelAccuracy.versions = {
      champion: data.champion, previous: data.previous, canEdit: data.can_edit,
      rows: data.versions.map((v) => ({ version: v.version, status: v.status, champion: v.champion, decidedBy: v.decided_by })),
    };
  }

  async function loadAlerts() {
    const data = await getJSON("alerts", { limit: 100 });
    const summary = document.getElementById("alerts-summary");
    summary.replaceChildren(el("b", {}, fmtNum(data.total)), data.total === 1 ? " alert" : " alerts", " · ",
      el("b", {}, fmtNum(data.pending)), " not notified yet");
    const body = document.querySelector("#alerts tbody");
    body.replaceChildren(...data.alerts.map((a) => el("tr", { "data-kind": a.kind },
      el("td", {}, fmtIso(a.created_at)), el("td", {}, badge(a.kind === "candidate_rejected" ? "rejected" : a.kind)),
      el("td", {}, a.version === null ? "" : `v${a.version}`), el("td", { class: "wrap" }, a.message),
      el("td", { title: a.notified_by || "" }, a.notified_at
        ? [badge("notified"), ` ${fmtIso(a.notified_at)} · ${a.notified_by || ""}`] : badge("pending")))));
    window.modelAccuracy.alerts = data.alerts.map((a) => ({ kind: a.kind, notified: a.notified_at !== null }));
  }

  async function act(action, payload) {
    const status = document.getElementById("action-status");
    const reason = document.getElementById("reason").value.trim();
    if (reason.length < 3) {
      status.className = "unavailable";
      status.textContent = "Give a reason (at least 3 characters): it is recorded with your name.";
      return;
    }
    status.className = "muted";
    status.textContent = "Working…";
    const response = await fetch(`api/models/${encodeURIComponent(state.model)}/${action}`, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Requested-By": "model-accuracy-page" },
      body: JSON.stringify({ ...payload, reason }),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    window.modelAccuracy.lastAction = { action, status: response.status, data };
    if (!response.ok) {
      status.className = "unavailable";
      status.textContent = `${action} refused (HTTP ${response.status}): ${data && data.detail ? JSON.stringify(data.detail) : response.statusText}`;
      return;
    }
    status.className = "ok";
    status.textContent = `v${data.champion} is the champion now (${action} by ${data.actor}).`;
    document.getElementById("reason").value = "";
    await page.loadAll();
  }

  page.loaders.push([loadVersions, "versions-summary"], [loadAlerts, "alerts-summary"]);
  page.setups.push(() => {
    document.getElementById("rollback").addEventListener("click", () => act("rollback", {}).catch((e) => fail("action-status", e)));
    document.querySelector("#versions tbody").addEventListener("click", (e) => {
      const button = e.target.closest("button.promote");
      if (button) act("promote", { version: Number(button.dataset.version) }).catch((err) => fail("action-status", err));
    });
  });
})();
