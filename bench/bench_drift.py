"""Benchmark: the drift detectors on the error streams of real learner runs, with and without drift.

What the issue asks of drift detection: the author's week-2 drift detected within 500 records of its start, the
same on generated data with drift, and no false drift on generated data without drift. A detector's defaults must
hold on data of the same kind, not one file, so this script sweeps the kinds: generated data with 30-400 shops
(one mini-batch is then 3 hours to a quarter of an hour), label noise 0-20 %, 14-21 days, each with and without
a drift from the middle day, in both learner modes; the author's file with three model seeds; and synthetic daily
cycles (a model good at night and poor in busy hours that fill 20-70 % of the day, every day alike), the shape
that makes cumulative tests fire.

The learner (:class:`include.training.learner.IncrementalLearner`, defaults) runs on each data set once per mode, in
memory (the detectors see only its per-mini-batch prequential errors, which the broker does not change; the runs
through the broker are ``bench_accuracy.py``'s); then every detector in
:data:`include.training.drift_detectors.DETECTORS`, with its defaults, reads every stream. Reported per stream: false alarms (on the run without drift, and before the change
on the run with it) and the delay of the first detection after the first row whose rule changed (generated data:
:func:`include.demo.generate.first_drifted_row`; the author's file: record 5,600). It PRINTS the table and writes it
as markdown to ``--out``; it never asserts.

Run with ``scripts/bench.sh drift`` or ``.venv/bin/python bench/bench_drift.py --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from bench.common import BLOG_FILE, blog_rows, machine as describe_machine, publish  # noqa: E402
import numpy as np  # noqa: E402

BLOG_WEEK = 5_600
FIRST_DAY = date(2026, 1, 1)
DETECT_WITHIN = 500
# (generator seed, shops, label noise, days): the kind of data, varied.
GENERATED = [(1, 100, 0.0, 14), (2, 100, 0.05, 14), (3, 100, 0.1, 14), (4, 50, 0.05, 21), (5, 50, 0.15, 21),
             (4, 200, 0.05, 21), (5, 200, 0.15, 21), (6, 400, 0.1, 21), (7, 100, 0.2, 21), (8, 30, 0.0, 21)]
CYCLES = [(busy, per_day) for busy in (0.2, 0.3, 0.5, 0.7) for per_day in (12, 24, 48, 96)]


@dataclass
class Stream:
    data: str
    mode: str
    errors: list[float]
    rows: list[int]
    change: int | None  # the first changed row, None without drift


def learner_stream(schema, lines: list[bytes], mode: str, seed: int = 0) -> tuple[list[float], list[int]]:
    from include.training.decode import decode_batch
    from include.training.learner import IncrementalLearner
    from include.training.learner_config import LearnerConfig
    from include.training.model import build_model

    decoded = decode_batch(schema, lines)
    if decoded.errors:
        raise ValueError(f"{len(decoded.errors)} rows failed to decode, e.g. {next(iter(decoded.errors.items()))}")
    learner = IncrementalLearner(build_model(schema, seed=seed), LearnerConfig(mode=mode, seed=seed))
    metrics = learner.process(decoded.x, decoded.y)
    return [1.0 - m.prequential_accuracy for m in metrics], [m.n for m in metrics]


def generated_streams(work: Path, quick: bool) -> list[Stream]:
    from include.demo.generate import first_drifted_row, generate_range
    from include.schema import load_schema

    schema = load_schema("drone")
    out = []
    for gseed, shops, noise, days in GENERATED[:3] if quick else GENERATED:
        drift_day = days // 2
        for drift in (False, True):
            paths = generate_range(FIRST_DAY, FIRST_DAY + timedelta(days=days - 1),
                                   work / f"{gseed}-{shops}-{noise}-{drift}",
                                   seed=gseed, shops=shops, noise=noise,
                                   drift_from=FIRST_DAY + timedelta(days=drift_day) if drift else None)
            lines = [line for p in paths for line in p.read_bytes().splitlines()[1:] if line]
            change = drift_day * 24 * shops + first_drifted_row(gseed, shops) if drift else None
            name = f"generated: {shops} shops, noise {noise:.2f}, {days} days, seed {gseed}"
            for mode in ("single_pass", "replay"):
                errors, rows = learner_stream(schema, lines, mode)
                out.append(Stream(name + (", drift" if drift else ""), mode, errors, rows, change))
                print(f"  {out[-1].data} [{mode}]: {len(errors)} mini-batches", flush=True)
    return out


def blog_streams(path: Path, quick: bool) -> list[Stream]:
    from include.schema import load_schema

    schema = load_schema("blog_drift")
    lines = blog_rows(path)  # line 5,601 has 13 fields and is left out: week 2 starts at record 5,600
    out = []
    for mode in ("single_pass", "replay"):
        for seed in range(1 if quick else 3):
            errors, rows = learner_stream(schema, lines, mode, seed)
            out.append(Stream(f"the author's file, model seed {seed}, drift", mode, errors, rows, BLOG_WEEK))
            print(f"  {out[-1].data} [{mode}]", flush=True)
    return out


def cycle_streams() -> list[Stream]:
    """A model right 93 % of the time at night and 50 % in the busy hours, every day alike, for 21 days."""
    rng = np.random.default_rng(0)
    out = []
    for busy_share, per_day in CYCLES:
        hour = np.arange(21 * per_day) % per_day
        start = per_day * 7 // 24
        busy = (hour >= start) & (hour < start + round(busy_share * per_day))
        errors = rng.binomial(100, np.where(busy, 0.5, 0.07)) / 100
        out.append(Stream(f"synthetic daily cycle: busy {busy_share:.0%} of {per_day} mini-batches a day", "-",
                          errors.tolist(), [100] * len(errors), None))
    return out


def detect(name: str, stream: Stream) -> list[int]:
    """Rows read when ``name`` (defaults) fired, resetting after each detection as the trainer does."""
    from include.training.drift_detectors import make_detector

    det = make_detector(name)
    fired, rows = [], 0
    for x, n in zip(stream.errors, stream.rows):
        rows += n
        if det.update(float(x), float(n)):
            fired.append(rows)
            det.reset()
    return fired


# Long on purpose: a benchmark's main is its protocol, step by step, in the order the report states it.
def main(argv: list[str] | None = None) -> int:
    from include.training.drift_detectors import DETECTORS
    from include.training.learner_config import LearnerConfig
    from include.training.model import configure_tensorflow

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=BLOG_FILE)
    parser.add_argument("--quick", action="store_true", help="three generated data sets and one model seed")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "drift.md")
    args = parser.parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # a new learner per stream retraces, on purpose
    configure_tensorflow()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as work:
        streams = blog_streams(args.data, args.quick) + generated_streams(Path(work), args.quick) + cycle_streams()
    learn_s = time.perf_counter() - started

    results = {name: [detect(name, s) for s in streams] for name in DETECTORS}
    lines = [
        "# Drift detectors on the error streams of real learner runs",
        "",
        f"- Run: {when} on {describe_machine()}; {len(streams)} streams "
        f"({learn_s:.0f} s of learner runs, in memory: the detectors see only the per-mini-batch prequential errors)",
        f"- Learner defaults (mini-batches of 100, 80/20 split; replay: buffer {LearnerConfig().replay_buffer:,}, "
        f"{LearnerConfig().replay_steps} steps), no reaction (the detectors read the same error streams); every "
        "detector with its defaults, reset after a detection as in the trainer",
        f"- Delay: rows from the first row whose rule changed to the detection (target: within {DETECT_WITHIN}); "
        "false alarms: detections on a run without drift, or before the change on a run with it",
        "",
        "| data | mode | " + " | ".join(f"`{d}` false alarms | `{d}` delay" for d in DETECTORS) + " |",
        "|---|---|" + "---:|---:|" * len(DETECTORS),
    ]
    totals = {d: {"false": 0, "within": 0, "late": 0, "missed": 0} for d in DETECTORS}
    by_mode = {(d, mode): [0, 0] for d in DETECTORS for mode in ("single_pass", "replay")}  # [found within, drifts]
    for i, s in enumerate(streams):
        cells = []
        for d in DETECTORS:
            fired = results[d][i]
            false = [r for r in fired if s.change is None or r < s.change]
            after = [r - s.change for r in fired if s.change is not None and r >= s.change]
            totals[d]["false"] += len(false)
            if s.change is None:
                delay = "-"
            else:
                within = bool(after) and after[0] <= DETECT_WITHIN
                by_mode[(d, s.mode)][0] += within
                by_mode[(d, s.mode)][1] += 1
                delay = f"+{after[0]:,}" if after else "missed"
                totals[d]["within" if within else "late" if after else "missed"] += 1
            cells += [str(len(false)) if false else "0", delay]
        lines.append(f"| {s.data} | {s.mode} | " + " | ".join(cells) + " |")
        print(f"{s.data} [{s.mode}]: " + ", ".join(f"{d} {c1} false / {c2}" for d, c1, c2 in
                                                   zip(DETECTORS, cells[::2], cells[1::2])), flush=True)
    drifted = sum(1 for s in streams if s.change is not None)
    lines += ["", f"Totals over {len(streams)} streams ({drifted} with a drift):", ""]
    for d in DETECTORS:
        t = totals[d]
        lines.append(f"- `{d}`: {t['false']} false alarms; drift found within {DETECT_WITHIN} rows {t['within']} "
                     f"times, later {t['late']}, missed {t['missed']}")
    lines.append("- drifts found within the target, by mode: " + "; ".join(
        f"`{d}` {mode} {w}/{t}" for (d, mode), (w, t) in by_mode.items()))
    text = "\n".join(lines) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
