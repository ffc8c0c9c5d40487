"""The report of bench_generalise.py: the summary, a table per family, the end-to-end row and the issue's targets
(point 3), from the figures the runs returned. Formatting only: it runs nothing."""

from __future__ import annotations

from statistics import mean
from typing import Any

from bench.generalise_models import river_version

WITHIN_CEILING = 0.015
BLOG_TARGET = 0.97
DETECT_WITHIN = 500
RECALL_TARGET = 0.95  # the point 4: after a return, this accuracy within RECALL_WITHIN records
RECALL_WITHIN = 300
RIVER = ("HAT", "ARF")


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _mean_min(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return f"{mean(vals):.3f} ({min(vals):.3f})" if vals else "n/a"


def drift_figures(res: dict) -> dict:
    """Delay to each change (None: missed), false alarms (before the first change or with no change), extra
    detections (more than one after a change)."""
    dets, changes = res["ours"]["detections"], [c for c in res["changes"] if c is not None]
    if not changes:
        return {"delays": [], "false": len(dets), "extra": 0}
    bounds = changes + [float("inf")]
    delays, extra = [], 0
    for c, nxt in zip(changes, bounds[1:]):
        after = [d - c for d in dets if c <= d < nxt]
        delays.append(after[0] if after else None)
        extra += max(0, len(after) - 1)
    return {"delays": delays, "false": sum(1 for d in dets if d < changes[0]), "extra": extra}


def _gaps(runs: list[dict], week: int) -> list[float]:
    return [r["ours"]["windows"][week] - r["ceiling"][week] for r in runs
            if r["ceiling"] and r["ceiling"][week] is not None]


def _river(runs: list[dict], name: str, week: int) -> list[float]:
    return [r["river"][name]["windows"][week] for r in runs if r.get("river") and name in r["river"]]


def _delays_cell(runs: list[dict]) -> str:
    figs = [drift_figures(r) for r in runs]
    if not any(f["delays"] for f in figs):
        return "-"
    per_change = zip(*[f["delays"] for f in figs])
    return " / ".join(", ".join("missed" if d is None else f"+{d:,}" for d in change) for change in per_change)


def _label(specs: list[Any], key: str) -> str:
    for s in specs:
        if s.key == key:
            return s.label
    if key == "blog_recurring":
        return "the author's file, then its week 1 again (recurring), one per model seed"
    return "the author's file (drift_2weeks_V2.csv), one per model seed"


def _rps(runs: list[dict]) -> str:
    parts = [f"{mean(r['ours']['rps'] for r in runs):,.0f}"]
    for name in RIVER:
        vals = [r["river"][name]["rps"] for r in runs if r.get("river") and name in r["river"]]
        parts.append(f"{mean(vals):,.0f}" if vals else "n/a")
    return " / ".join(parts)


def _summary(specs: list[Any], results: dict[str, list[dict]]) -> list[str]:
    lines = ["| family | weeks x rows | positives | Bayes, last week | batch ceiling, last week | ours, last week: "
             "mean (min) | ours - ceiling, worst week (mean over seeds) | HAT, last week | ARF, last week | drift delay "
             "per seed (records after the first changed row) | false alarms (+ extra detections) | records/s ours / "
             "HAT / ARF |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for key, runs in results.items():
        weeks = len(runs[0]["ours"]["windows"])
        last = weeks - 1
        gaps = [mean(g) for g in (_gaps(runs, w) for w in range(weeks)) if g]
        figs = [drift_figures(r) for r in runs]
        bayes = runs[0]["bayes"][last]
        lines.append(
            f"| {_label(specs, key)} | {weeks} x {runs[0]['rows'] // weeks:,} | {mean(r['positives'] for r in runs):.2f} "
            f"| {_f(mean(r['bayes'][last] for r in runs) if bayes is not None else None)} "
            f"| {_mean_min([r['ceiling'][last] for r in runs if r['ceiling']])} "
            f"| {_mean_min([r['ours']['windows'][last] for r in runs])} | {min(gaps):+.3f} "
            f"| {_mean_min(_river(runs, 'HAT', last))} | {_mean_min(_river(runs, 'ARF', last))} | {_delays_cell(runs)} "
            f"| {sum(f['false'] for f in figs)} (+{sum(f['extra'] for f in figs)}) | {_rps(runs)} |")
    return lines


def _family_table(specs: list[Any], key: str, runs: list[dict]) -> list[str]:
    lines = [f"### {_label(specs, key)}", "",
             "| end of week | Bayes | batch ceiling: mean (min) | ours: mean (min) | ours - ceiling: mean (worst seed) "
             "| HAT: mean (min) | ARF: mean (min) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for w in range(len(runs[0]["ours"]["windows"])):
        gaps = _gaps(runs, w)
        bayes = [r["bayes"][w] for r in runs if r["bayes"][w] is not None]
        lines.append(f"| {w + 1} | {_f(mean(bayes) if bayes else None)} "
                     f"| {_mean_min([r['ceiling'][w] for r in runs if r['ceiling']])} "
                     f"| {_mean_min([r['ours']['windows'][w] for r in runs])} "
                     f"| {f'{mean(gaps):+.3f} ({min(gaps):+.3f})' if gaps else 'n/a'} "
                     f"| {_mean_min(_river(runs, 'HAT', w))} | {_mean_min(_river(runs, 'ARF', w))} |")
    figs = [drift_figures(r) for r in runs]
    lines += ["", f"Per seed: detections at rows {[r['ours']['detections'] for r in runs]}; first changed rows "
              f"{[r['changes'] for r in runs] if runs[0]['changes'] else 'none (no drift)'}; false alarms "
              f"{[f['false'] for f in figs]}; records/s (ours) {[round(r['ours']['rps']) for r in runs]}.", ""]
    return lines


def _targets(specs: list[Any], results: dict[str, list[dict]]) -> list[str]:
    lines = ["## The issue's point-3 targets against these figures", ""]
    misses = []
    for key, runs in results.items():
        for w in range(len(runs[0]["ours"]["windows"])):
            gaps = _gaps(runs, w)
            if gaps and mean(gaps) < -WITHIN_CEILING:
                misses.append(f"{_label(specs, key)}, week {w + 1}: {mean(gaps):+.3f}")
    checked = sum(1 for runs in results.values() for w in range(len(runs[0]["ours"]["windows"])) if _gaps(runs, w))
    lines.append(f"- End-of-week window accuracy within {WITHIN_CEILING * 100:.1f} points of the batch ceiling (mean over "
                 f"seeds): {checked - len(misses)} of {checked} family-weeks met; missed: "
                 + ("; ".join(misses) if misses else "none"))
    if "blog" in results:
        wins = [w for r in results["blog"] for w in r["ours"]["windows"]]
        lines.append(f"- The author's file >= {BLOG_TARGET} at the end of both weeks for all seeds: "
                     f"{'met' if min(wins) >= BLOG_TARGET else 'NOT met'} (lowest {min(wins):.3f}; per seed "
                     f"{[[round(w, 3) for w in r['ours']['windows']] for r in results['blog']]})")
    abrupt = [(key, r) for key, runs in results.items() for r in runs
              if next((s for s in specs if s.key == key and s.drift in ("abrupt", "recurring") and s.noise <= 0.05), None)
              or key in ("blog", "blog_recurring")]
    delays = [(key, d) for key, r in abrupt for d in drift_figures(r)["delays"]]
    late = [(k, d) for k, d in delays if d is None or d > DETECT_WITHIN]
    lines.append(f"- Abrupt drift detected within {DETECT_WITHIN} records of the first changed row (noise <= 5 %: the "
                 f"abrupt family, both changes of the recurring one, the author's file): {len(delays) - len(late)} of "
                 f"{len(delays)} changes; late or missed: "
                 + (", ".join(f"{k} {'missed' if d is None else f'+{d:,}'}" for k, d in late) if late else "none"))
    stable = {key: sum(drift_figures(r)["false"] for r in runs) for key, runs in results.items()
              if not runs[0]["changes"]}
    alarms = {k: v for k, v in stable.items() if v}
    lines.append(f"- 0 false alarms on the families without drift: {'met' if not alarms else 'NOT met'} "
                 f"({sum(stable.values())} over {len(stable)} families x seeds"
                 + (f": {', '.join(f'{k} {v}' for k, v in alarms.items())}" if alarms else "") + ")")
    lines += _versus_river(specs, results)
    if "blog_recurring" in results:
        figs = [(_return_figures(r["ours"], r["changes"][-1], RECALL_TARGET),
                 _return_figures(r["relearn"], r["changes"][-1], RECALL_TARGET)) for r in results["blog_recurring"]]
        met = all(m["good"] is not None and m["good"] <= RECALL_WITHIN for m, _ in figs)
        lines.append(f"- Point 4, a returning concept (the author's week 1 again): >= {RECALL_TARGET} within "
                     f"{RECALL_WITHIN} records of the return: {'met' if met else 'NOT met'}; predicted at that level "
                     f"from +{', +'.join(_n(m['good']) for m, _ in figs)} records with the concept memory, from "
                     f"+{', +'.join(_n(r['good']) for _, r in figs)} relearning without it (per seed)")
    return lines


def _n(v: int | None) -> str:
    return "never" if v is None else f"{v:,}"


def _return_figures(run: dict, back: int, target: float) -> dict:
    """After the return at row ``back``: the first event (records after it, reaction), the records after it from
    which the next three mini-batches are predicted at ``target`` or better on average ("good from"), and the
    prequential accuracy of the mini-batches ending 300 to 1,300 records after it."""
    ends, pre = run["ends"], run["prequential"]
    event = next(((d - back, r) for d, r in zip(run["detections"], run["reactions"]) if d >= back), None)
    span = [p for e, p in zip(ends, pre) if back + 300 < e <= back + 1300]
    good = next((ends[k] - back for k in range(len(ends)) if ends[k] >= back and len(pre[k + 1:k + 4]) == 3
                 and mean(pre[k + 1:k + 4]) >= target), None)
    return {"event": event, "good": good, "acc": mean(span) if span else None}


def _recurring(specs: list[Any], results: dict[str, list[dict]]) -> list[str]:
    """Concept memory against relearning, per seed, on the families whose concept returns."""
    keys = [k for k in results if results[k] and results[k][0].get("relearn")]
    if not keys:
        return []
    lines = ["## Recurring concepts: the concept memory against relearning", "",
             "The same stream twice per seed: with the default concept memory, and without it (`memory=0`: the return is "
             "a drift like any other, and `shrink` relearns it). Return: the first row of the returned concept. Event: "
             "the first detection after the return (records after it, reaction). Good from: records after the return "
             "from which the next three mini-batches are predicted (before training on them) at the target or better "
             f"on average; target {RECALL_TARGET} on the author's file, the returned week's batch ceiling less "
             f"{WITHIN_CEILING * 100:.1f} points on generated data. Accuracy: prequential, the mini-batches ending 300 "
             "to 1,300 records after the return.", ""]
    for key in keys:
        lines += [f"### {_label(specs, key)}", "",
                  "| seed | return at row | target | memory: event | memory: good from | memory: accuracy | "
                  "relearn: event | relearn: good from | relearn: accuracy |", "|---:|---:|---:|---|---:|---:|---|---:|---:|"]
        for r in results[key]:
            back = r["changes"][-1]
            ceiling = (r.get("ceiling") or [None])[-1]
            target = RECALL_TARGET if key == "blog_recurring" else (ceiling - WITHIN_CEILING if ceiling else None)
            if target is None:
                continue
            cells = []
            for run in (r["ours"], r["relearn"]):
                f = _return_figures(run, back, target)
                ev = "none" if f["event"] is None else f"+{f['event'][0]:,} ({f['event'][1]})"
                cells += [ev, "never" if f["good"] is None else f"+{f['good']:,}", _f(f["acc"])]
            lines.append(f"| {r['seed']} | {back:,} | {target:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _versus_river(specs: list[Any], results: dict[str, list[dict]]) -> list[str]:
    """Mean over families of the mean (over the seeds River ran on) of every end-of-week window accuracy."""
    per: dict[str, list[float]] = {"ours": [], "HAT": [], "ARF": []}
    wins = {"HAT": 0, "ARF": 0}
    for key, runs in results.items():
        both = [r for r in runs if r.get("river")]
        if not both:
            continue
        fam = {"ours": mean(w for r in both for w in r["ours"]["windows"])}
        for name in RIVER:
            fam[name] = mean(w for r in both for w in r["river"][name]["windows"])
            wins[name] += fam["ours"] > fam[name]
        for k, v in fam.items():
            per[k].append(v)
    if not per["ours"]:
        return ["- Ahead of River's HAT and ARF: not measured (River not installed)"]
    m = {k: mean(v) for k, v in per.items()}
    n = len(per["ours"])
    return [f"- Ahead of River's HAT and ARF on the mean over {n} families (end-of-week window accuracy, all weeks, "
            f"seeds River ran on): ours {m['ours']:.4f}, HAT {m['HAT']:.4f}, ARF {m['ARF']:.4f}: "
            f"{'met' if m['ours'] > max(m['HAT'], m['ARF']) else 'NOT met'}; family by family ours is ahead of HAT "
            f"on {wins['HAT']} of {n}, of ARF on {wins['ARF']} of {n}"]


def render(specs: list[Any], results: dict[str, list[dict]], meta: dict) -> str:
    from include.training.drift import DriftConfig
    from include.training.drift_detectors import make_detector
    from include.training.learner_config import DEFAULT_MODE, LearnerConfig
    from include.training.options import TrainOptions

    args, cfg = meta["args"], LearnerConfig(mode=DEFAULT_MODE)
    detector = make_detector(DriftConfig().detector).to_dict()
    lines = [
        "# Generalisation benchmark: the defaults on families of data they were not tuned on",
        "",
        f"- Run: {meta['when']} on {meta['machine']}; load average before/after {meta['load'][0]:.2f} / "
        f"{meta['load'][1]:.2f}; {meta['cpu_s']:,.0f} s of CPU ({meta['wall_s']:,.0f} s wall) for the whole run"
        + (" (**partial: interrupted or still running**)" if meta.get("partial") else ""),
        "- **Kafka is not in the loop**: rows decoded in-process and trained by the learner and drift monitor composed "
        f"as the trainer composes them (a new model's defaults, chunks of {TrainOptions.chunk_batches} mini-batches); one end-to-end row through "
        "the broker and the real trainer on the author's file is at the end",
        f"- Defaults: mode `{cfg.mode}` (buffer {cfg.replay_buffer:,} rows, {cfg.replay_steps} replay steps per "
        f"mini-batch of {cfg.batch_messages}, 80/20 split, window {cfg.window_size:,}); drift detector "
        f"`{detector['name']}` ({', '.join(f'{k} {v}' for k, v in detector['params'].items())}), reaction "
        f"`{DriftConfig().reaction}`",
        f"- Generated data: {args['seeds']} seeds per family (generator seed k+1, model seed k), from Monday "
        f"2026-01-05, at most {args['rows_per_day']:,} rows a day ({args['rows_per_day'] // 24} random shops report "
        "each hour when there are more, every shop otherwise); drifts start on the first day of week 2",
        f"- Batch ceiling: a fresh model trained {args['ceiling_epochs']} epochs on the week's training rows of the "
        "same seed, judged on its held-out rows; Bayes-optimal: the generator's sidecars (exact, per file)",
        f"- River {river_version() or '(not installed)'}: HoeffdingAdaptiveTreeClassifier and ARFClassifier (defaults, "
        f"seeded), on the first {args['river_seeds']} seeds of each generated family and every seed of the author's "
        "file, same mini-batches, split and window, "
        "learnt one row at a time; records/s = learning + the end-of-week window measurements",
        "- Records/s of ours: the learner's `process` calls only; the first family of each schema (the author's file, then location and type only) also pays each model seed's one-off XLA compile, later families reuse the compiled learner put back to its fresh state",
        "",
        "## Summary",
        "",
        *_summary(specs, results),
        "",
    ]
    lines += _targets(specs, results) + [""] + _recurring(specs, results) + ["## Per family", ""]
    for key, runs in results.items():
        lines += _family_table(specs, key, runs)
    e2e = meta.get("e2e")
    lines += ["## End to end through Kafka (the real trainer, the author's file, defaults, model seed 0)", ""]
    if e2e:
        ours = results.get("blog", [{}])[0].get("ours", {})
        lines.append(f"Trainer through the broker: window {e2e['windows'][0]:.3f} / {e2e['windows'][1]:.3f} at the end "
                     f"of weeks 1 / 2, detections at records {e2e['detections']}, {e2e['rps']:,.0f} records/s (whole "
                     f"run, set-up and compile included); in-process, same seed: "
                     f"{' / '.join(f'{w:.3f}' for w in ours.get('windows', []))}, detections at {ours.get('detections')}.")
    else:
        lines.append("Not run (`--no-kafka`, or the broker did not answer).")
    return "\n".join(lines) + "\n"
