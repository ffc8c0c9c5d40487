"""Benchmark of the incremental learner on the blog author's file (prints figures; writes nothing).

    .venv/bin/python bench/bench_learner.py [--data PATH] [--rows 200000] [--seedloop-batches 300]

Measures: decoding speed; records/s of ``IncrementalLearner.process`` in seed and replay mode on ~200k rows (the
file repeated), compile time excluded and shown apart; the same rows through the drift monitor with its defaults
(reaction, concept memory) for each of ``--monitor-chunks`` mini-batches per compiled call, with the calls it made; the faithful ``fit``/``evaluate`` loop (``SeedLoop``) on a few
hundred mini-batches; on the file in order, the window accuracy at the end of week 1 (line 5,600) and week 2 in
replay mode, and the mean absolute difference between the seed-mode and SeedLoop window-accuracy curves.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import BLOG_FILE  # noqa: E402

WEEK1_BATCHES = 56  # lines 1-5,600 are week 1: 56 mini-batches of 100


# Long on purpose: a benchmark's main is its protocol, step by step, in the order the report states it.
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(BLOG_FILE))
    parser.add_argument("--schema", default="blog_drift")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seedloop-batches", type=int, default=300)
    parser.add_argument("--replay-seeds", type=int, default=3)
    parser.add_argument("--monitor-chunks", default="16,32,64", help="chunk sizes to run the drift monitor with")
    parser.add_argument("--intra-op-threads", type=int, default=None)
    parser.add_argument("--inter-op-threads", type=int, default=None)
    args = parser.parse_args()

    from include.training.model import configure_tensorflow

    configure_tensorflow(args.intra_op_threads, args.inter_op_threads)

    from include.training.decode import decode_batch
    from include.training.learner import IncrementalLearner
    from include.training.learner_config import LearnerConfig
    from include.training.seed_loop import SeedLoop
    from include.training.model import build_model
    from include.schema import load_schema

    schema = load_schema(args.schema)
    lines = [line for line in Path(args.data).read_bytes().split(b"\r\n") if line]
    decoded = decode_batch(schema, lines)
    x, y = decoded.x, decoded.y
    print(f"file: {len(lines)} lines, {len(x)} decoded, errors {decoded.errors}")

    reps = -(-args.rows // len(x))
    big_values = (lines * reps)[: args.rows]
    best = min(_timed(lambda: decode_batch(schema, big_values))[1] for _ in range(3))
    per_batch = min(_timed(lambda: [decode_batch(schema, big_values[i:i + 100]) for i in range(0, 50_000, 100)])[1]
                    for _ in range(2))
    print(f"decode: {len(big_values) / best:,.0f} rows/s in one call of {len(big_values):,}; "
          f"{50_000 / per_batch:,.0f} rows/s in calls of 100")

    big_x = np.concatenate([x] * reps)[: args.rows]
    big_y = np.concatenate([y] * reps)[: args.rows]

    speeds = {}
    for mode in ("single_pass", "replay"):
        cfg = LearnerConfig(mode=mode)
        learner = IncrementalLearner(build_model(schema, seed=0), cfg)
        _, compile_s = _timed(lambda: learner.process(big_x[:100], big_y[:100]))
        metrics, secs = _timed(lambda: learner.process(big_x[100:], big_y[100:]))
        speeds[mode] = (len(big_x) - 100) / secs
        steps = sum(m.steps for m in metrics)
        print(f"{mode} mode: {speeds[mode]:,.0f} records/s on {len(big_x) - 100:,} rows "
              f"({len(metrics)} mini-batches, {steps:,} gradient steps; first call incl. compile {compile_s:.1f} s)")

    # The drift monitor with its defaults: a call stops where an event is possible, so calls = chunks + stops.
    from include.training.drift import DriftConfig, DriftMonitor

    for mode in ("single_pass", "replay"):
        for chunk in (int(c) for c in args.monitor_chunks.split(",")):
            learner = IncrementalLearner(build_model(schema, seed=0), LearnerConfig(mode=mode, chunk_batches=chunk))
            learner.compile()
            calls, process_until = [0], learner.process_until

            def counted(*a, **kw):  # noqa: ANN002, ANN003, ANN202
                calls[0] += 1
                return process_until(*a, **kw)

            learner.process_until = counted
            monitor = DriftMonitor(DriftConfig())
            events = []
            _, secs = _timed(lambda: [events.extend(monitor.process(learner, big_x[i:i + 6400], big_y[i:i + 6400])[1])
                                      for i in range(0, len(big_x), 6400)])
            print(f"{mode} mode through the drift monitor, {chunk} mini-batches a call: {len(big_x) / secs:,.0f} "
                  f"records/s, {calls[0]:,} calls for {-(-len(big_x) // 100):,} mini-batches, {len(events)} events")
    e2e_values = big_values[: 100_000]

    def end_to_end():
        learner_e2e = IncrementalLearner(build_model(schema, seed=0), LearnerConfig())
        learner_e2e.process(big_x[:100], big_y[:100])  # compile first
        start = time.perf_counter()
        for i in range(0, len(e2e_values), 6400):
            d = decode_batch(schema, e2e_values[i:i + 6400])
            learner_e2e.process(d.x, d.y)
        return time.perf_counter() - start

    e2e = end_to_end()
    print(f"seed mode end to end (decode + train, chunks of 6,400 messages): {len(e2e_values) / e2e:,.0f} records/s")

    # The faithful loop, on the file in order then on the repeated data up to --seedloop-batches mini-batches.
    loop = SeedLoop(build_model(schema, seed=0), LearnerConfig(), shuffle=True)
    n_loop = args.seedloop_batches * 100
    loop_metrics, loop_s = _timed(lambda: loop.process(big_x[:n_loop], big_y[:n_loop]))
    loop_speed = n_loop / loop_s
    print(f"SeedLoop (model.fit + model.evaluate per mini-batch): {loop_speed:,.0f} records/s over "
          f"{args.seedloop_batches} mini-batches; single-pass mode is {speeds['single_pass'] / loop_speed:,.0f}x faster")

    fast_curve = [m.window_accuracy for m in IncrementalLearner(build_model(schema, seed=0), LearnerConfig()).process(x, y)]
    exact = SeedLoop(build_model(schema, seed=0), LearnerConfig(), shuffle=False).process(x, y)
    exact_curve = [m.window_accuracy for m in exact]
    shuffled_curve = [m.window_accuracy for m in loop_metrics[: len(fast_curve)]]
    print(f"window-accuracy curves on the file ({len(fast_curve)} mini-batches): mean |seed mode - SeedLoop| = "
          f"{_mad(fast_curve, exact_curve) * 100:.2f} points with fit(shuffle=False), "
          f"{_mad(fast_curve, shuffled_curve) * 100:.2f} points with fit's default shuffle=True; "
          f"seed-mode peak {max(fast_curve):.3f}, end of week 1 {fast_curve[WEEK1_BATCHES - 1]:.3f}, "
          f"end {fast_curve[-1]:.3f}")

    for seed in range(args.replay_seeds):
        learner = IncrementalLearner(build_model(schema, seed=seed), LearnerConfig(mode="replay", seed=seed))
        curve = [m.window_accuracy for m in learner.process(x, y)]
        print(f"replay mode (defaults, model seed {seed}): window accuracy end of week 1 {curve[WEEK1_BATCHES - 1]:.3f}, "
              f"end of week 2 {curve[-1]:.3f}")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _mad(a, b) -> float:
    pairs = [(p, q) for p, q in zip(a, b) if not (np.isnan(p) or np.isnan(q))]
    return float(np.mean([abs(p - q) for p, q in pairs]))


if __name__ == "__main__":
    main()
