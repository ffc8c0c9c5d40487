"""The monitoring report: the Model accuracy chart as a PNG and the training runs as a markdown table.

    python -m include report --out DIR [--model NAME] [--x records|event_time] [--db-url URL]

Writes ``DIR/accuracy.png`` and ``DIR/runs.md`` from the same queries (:mod:`include.monitoring`) as the Airflow UI
page, so the two never disagree. matplotlib is imported only here, never by the plugin.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from include import monitoring
from include.settings import Settings, get_settings

log = logging.getLogger(__name__)

SERIES_STYLE = {
    "window_accuracy": ("window accuracy", "#1f77b4"),
    "prequential_accuracy": ("prequential accuracy", "#ff7f0e"),
}


def _x_values(values: Sequence[int], x_axis: str) -> list:
    if x_axis == "event_time":
        return [datetime.fromtimestamp(v / 1000, tz=timezone.utc) for v in values]
    return list(values)


def plot_accuracy(curve: Mapping[str, Any], path: Path) -> Path:
    """Draw the accuracy chart of :func:`include.monitoring.accuracy_curve` into ``path`` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    x_axis = curve["x_axis"]
    fig = Figure(figsize=(12, 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    all_x: list = []
    for name, (label, color) in SERIES_STYLE.items():
        data = curve["series"].get(name) or {"x": [], "y": [], "run": []}
        if not data["x"]:
            continue
        xs = _x_values(data["x"], x_axis)
        all_x.extend((xs[0], xs[-1]))
        # One line per training run, joined into one curve: each run's stretch starts where the last ended.
        start = 0
        runs = data["run"]
        for i in range(1, len(runs) + 1):
            if i == len(runs) or runs[i] != runs[start]:
                lo = max(start - 1, 0)
                shade = 1.0 if runs[start] % 2 == 0 else 0.55
                ax.plot(xs[lo:i], data["y"][lo:i], color=color, alpha=shade, linewidth=1.1,
                        label=label if start == 0 else None)
                start = i
    if all_x:
        lo, hi = min(all_x), max(all_x)
        baseline = curve.get("baseline")
        if baseline:
            ax.hlines(baseline["accuracy"], lo, hi, colors="#2ca02c", linestyles="--", linewidth=1.2,
                      label=f"batch baseline {baseline['accuracy']:.3f}")
        if curve.get("bayes_accuracy") is not None:
            ax.hlines(curve["bayes_accuracy"], lo, hi, colors="#7f7f7f", linestyles=":", linewidth=1.4,
                      label=f"Bayes-optimal {curve['bayes_accuracy']:.3f}")
        for i, event in enumerate(curve.get("drift_events", [])):
            ax.axvline(_x_values([event["x"]], x_axis)[0], color="#d62728", alpha=0.5, linewidth=0.9,
                       linestyle="-.", label="drift event" if i == 0 else None)
        ax.legend(loc="lower right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no training history yet", ha="center", va="center", transform=ax.transAxes)
    title = f"Model accuracy: {curve['model_name']}"
    flt = curve.get("filter") or {}
    if flt.get("dag_run_id"):
        title += f" (DAG run {flt['dag_run_id']})"
    ax.set_title(f"{title}: {curve['total_batches']:,} mini-batches, {len(curve['runs'])} runs", fontsize=11)
    ax.set_xlabel("records seen" if x_axis == "records" else "event time (UTC)")
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_report(
    out: Path,
    *,
    settings: Settings | None = None,
    model_name: str = "default",
    x_axis: monitoring.XAxis = "records",
    max_points: int = monitoring.DEFAULT_MAX_POINTS,
    dag_run_id: str | None = None,
    limit: int = 1000,
) -> dict[str, Path]:
    """Write ``accuracy.png`` and ``runs.md`` into ``out``. Returns their paths."""
    settings = settings or get_settings()
    sessions = monitoring.sessions_for(settings.db_url)
    curve = monitoring.accuracy_curve(
        sessions, model_name=model_name, x_axis=x_axis, max_points=max_points, dag_run_id=dag_run_id,
        topic=settings.topic,
    )
    runs = monitoring.list_runs(sessions, model_name=model_name, dag_run_id=dag_run_id, limit=limit)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_accuracy(curve, out / "accuracy.png")
    md = out / "runs.md"
    heading = f"# Training runs: {model_name}\n\n{runs['total']} run(s)"
    if runs["total"] > len(runs["runs"]):
        heading += f", newest {len(runs['runs'])} shown"
    md.write_text(heading + ".\n\n" + runs_markdown(runs["runs"]), encoding="utf-8")
    return {"png": png, "markdown": md}


def runs_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """The runs table as GitHub-flavoured markdown (the report's ``runs.md``)."""
    header = ["DAG run", "kind", "start", "duration (s)", "records", "records/s", "offsets from", "offsets to",
              "stop reason", "checkpoint", "status", "window acc."]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1 else f"{value:,.1f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        dag_run = f"{r['dag_id']} / {r['dag_run_id']}" if r.get("dag_id") and r.get("dag_run_id") else r.get("dag_run_id") or r["run_id"]
        values = [dag_run, r["kind"], r["started_at"], r["duration_s"], r["records"], r["records_per_s"],
                  r["offsets_from"], r["offsets_to"], r["stop_reason"], (r["checkpoint_id"] or "")[:12] or None,
                  r["status"], r["window_accuracy"]]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"
