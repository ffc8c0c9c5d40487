"""Benchmark: value parsing in ingest validation and in the training decoder, this tree beside an older one.

What the task asks: one value parser for ingest and training without slowing either down. This script measures
and PRINTS rows/s (and writes them as a markdown table to ``--out``); it never asserts on timing, because
throughput depends on the machine and on whatever else runs on it. No Kafka is involved.

Measured in a fresh process per round, each figure the best of ``--repeats`` passes in that process:

* validator: :func:`include.ingest.validate.iter_records` over a drone-schema CSV written by
  ``include.demo.generate`` (``--rows`` data rows), every row valid;
* decoder, drone: :func:`include.training.decode.decode_batch` on the same rows as message values, in chunks of
  ``--chunk`` (the trainer's 64 messages x 100 batches);
* decoder, blog: the same on the blog author's rows (``include.demo.reference.BLOG_FILE``, schema blog_drift),
  repeated to ``--blog-rows``.

With ``--before DIR`` (a git worktree of an older commit, e.g. ``git worktree add /tmp/parse-before d0c26c6``),
every round runs the same measurement in this tree and in DIR, alternately and in alternating order, so both see
the same machine conditions; the report gives the medians over ``--rounds`` and the ratio after/before. Timings on
a shared machine are noisy: only ratios measured side by side mean anything, and the best pass of a process is the
one the machine's other work disturbed least.

    .venv/bin/python bench/bench_parse.py --before /tmp/parse-before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
KINDS = (
    ("validator", "validator rows/s (iter_records, drone CSV)"),
    ("decode_drone", "decoder rows/s (decode_batch, drone)"),
    ("decode_blog", "decoder rows/s (decode_batch, blog_drift)"),
)


# ---------------------------------------------------------------------------------------------------------
# One measurement, in a process whose ``include`` package is the tree's under test


def measure(csv_path: Path, chunk: int, blog_rows: int, repeats: int) -> dict[str, object]:
    """Time the validator and the decoder in this process, each the best of ``repeats`` passes (the best pass
    is the one the other processes on the machine disturbed least); rows/s of each, and where ``include`` is."""
    import include
    from include.demo.reference import BLOG_FILE
    from include.ingest.validate import iter_records
    from include.schema import load_schema
    from include.training.decode import decode_batch

    drone, blog = load_schema("drone"), load_schema("blog_drift")
    with csv_path.open("rb") as handle:
        handle.readline()  # the header
        drone_values = handle.read().splitlines()
    raw = BLOG_FILE.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\r\n")
    blog_values = [r for r in raw if r.count(b",") == len(blog.columns) - 1]
    blog_values = (blog_values * (blog_rows // len(blog_values) + 1))[:blog_rows]

    def validate() -> int:
        return sum(1 for item in iter_records(csv_path, drone) if item.__class__ is tuple)

    return {
        "include": str(Path(include.__file__).resolve().parents[1]),
        "validator": _best_rate(validate, len(drone_values), repeats),
        "decode_drone": _best_rate(_decoding(decode_batch, drone, drone_values, chunk), len(drone_values), repeats),
        "decode_blog": _best_rate(_decoding(decode_batch, blog, blog_values, chunk), len(blog_values), repeats),
    }


def _decoding(decode_batch, schema, values: list[bytes], chunk: int) -> Callable[[], int]:
    chunks = [values[i:i + chunk] for i in range(0, len(values), chunk)]
    decode_batch(schema, chunks[0])  # warm-up: the per-schema plan and first-call costs
    return lambda: sum(decode_batch(schema, c).good.size for c in chunks)


def _best_rate(run: Callable[[], int], rows: int, repeats: int) -> float:
    """Rows/s of the fastest of ``repeats`` calls of ``run``, which must accept all ``rows``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        accepted = run()
        best = min(best, time.perf_counter() - started)
        if accepted != rows:
            raise RuntimeError(f"{accepted} of {rows} rows accepted")
    return rows / best


# ---------------------------------------------------------------------------------------------------------
# The driver


def run_in(tree: Path, csv_path: Path, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter that imports ``include`` from ``tree``."""
    command = [sys.executable, str(SCRIPT), "--measure", str(csv_path), "--tree", str(tree),
               "--chunk", str(args.chunk), "--blog-rows", str(args.blog_rows), "--repeats", str(args.repeats)]
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if Path(result["include"]) != tree.resolve():
        raise RuntimeError(f"measured {result['include']}, not {tree}")
    return result


def write_csv(path: Path, rows: int) -> None:
    """A drone-schema CSV of ``rows`` generated data rows (deterministic: whole days from one seed)."""
    from bench.bench_ingest import write_csv as write_days

    with tempfile.TemporaryDirectory() as scratch:
        write_days(path, Path(scratch), rows=rows, shops=1000)


def render(args: argparse.Namespace, trees: dict[str, Path], runs: dict[str, list[dict]], when: str,
           loads: tuple[float, float]) -> str:
    from bench.common import machine

    names = list(trees)
    lines = [
        "# Value parsing: ingest validation and the training decoder",
        "",
        f"- Run: {when} on {machine()}; load average before/after: {loads[0]:.2f} / {loads[1]:.2f}",
        "- Trees: " + "; ".join(f"{name} = `{trees[name]}` ({_commit(trees[name])})" for name in names),
        f"- Data: {args.rows:,} generated drone rows (1,000 shops); the blog author's 11,199 valid rows repeated to "
        f"{args.blog_rows:,}; decoder chunks of {args.chunk:,} message values. No Kafka.",
        f"- {args.rounds} rounds, each running every tree once in a fresh process (order alternating); in a process "
        f"each figure is the best of {args.repeats} passes, and the table gives the medians over the rounds. The "
        "machine is shared: compare the ratio, measured side by side, not the absolute figures.",
        "",
    ]
    if len(names) == 2:
        before, after = runs["before"], runs["after"]
        lines += ["| rows/s | before (median) | after (median) | after / before | per-round ratios |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for kind, label in KINDS:
            b = statistics.median(r[kind] for r in before)
            a = statistics.median(r[kind] for r in after)
            ratios = ", ".join(f"{ra[kind] / rb[kind]:.2f}" for ra, rb in zip(after, before))
            lines.append(f"| {label} | {b:,.0f} | {a:,.0f} | {a / b:.2f} | {ratios} |")
    else:
        lines += ["| rows/s | median | rounds |", "| --- | ---: | --- |"]
        for kind, label in KINDS:
            values = [r[kind] for r in runs[names[0]]]
            lines.append(f"| {label} | {statistics.median(values):,.0f} | "
                         + ", ".join(f"{v:,.0f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def _commit(tree: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git tree"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="drone rows to validate and decode")
    parser.add_argument("--blog-rows", type=int, default=640_000, help="blog rows to decode (the file repeated)")
    parser.add_argument("--chunk", type=int, default=6_400, help="message values per decode_batch call")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5, help="passes per process; the best one counts")
    parser.add_argument("--before", type=Path, help="a worktree of the commit to compare with")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "parse.md")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure is not None:
        sys.path.insert(0, str(args.tree))
        print(json.dumps(measure(args.measure, args.chunk, args.blog_rows, args.repeats)))
        return 0

    # Only the driver imports this tree's own modules: a measuring process must see nothing but its tree's.
    sys.path.insert(0, str(PROJECT))
    from bench.common import publish

    trees = {"after": PROJECT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": PROJECT}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "drone.csv"
        write_csv(csv_path, args.rows)
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                result = run_in(trees[name], csv_path, args)
                runs[name].append(result)
                print(f"round {round_no + 1} {name}: " + ", ".join(f"{k} {result[k]:,.0f}" for k, _ in KINDS),
                      flush=True)
    publish(render(args, trees, runs, when, (load_before, os.getloadavg()[0])), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
