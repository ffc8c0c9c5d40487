"""The HTTP scorer's latency and throughput: ``python -m include serve`` as a real process, queried with httpx.

Measures, on three registered versions of a small trained model:

* p50 / p99 / max latency of 1-row requests (one client, one kept-alive connection, back to back);
* rows/s of 1,000-row requests (``--clients`` clients back to back; bodies encoded once, before timing);
* both again with a promotion in the middle of the run (the server loads the new version while answering), and
  how long the promotion took to be served (the pointer's change until the status names the new version);
* the server's RSS before and after ``--swaps`` promotions.

Targets on a 2-core machine: p99 <= 20 ms for one row, >= 20,000 rows/s batched. Prints the figures and writes
``bench/results/serving.md``. No pass/fail: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PROJECT, machine, publish  # noqa: E402
from tests.serving import MODEL, Server, make_versions  # noqa: E402

URL = "/v1/models/" + MODEL + ":predict"


def _bodies(versions, rows: int, count: int) -> list[bytes]:
    from include.schema import load_schema

    names = [n for n in load_schema("drone").names if n != "busy"]
    lines = versions.csv.read_text().splitlines()[1:]
    instances = [dict(zip(names, line.split(",")[:-1])) for line in lines]
    return [json.dumps({"instances": [instances[(k * rows + i) % len(instances)] for i in range(rows)]}).encode()
            for k in range(count)]


class _Switcher:
    """Promotes the next version once, after ``delay_s``; records how long until the server served it."""

    def __init__(self, versions, server, delay_s: float) -> None:
        self.versions, self.server, self.delay_s = versions, server, delay_s
        self.pickup_s: float | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import httpx

        from include.lifecycle.promotion import promote

        time.sleep(self.delay_s)
        registry = self.versions.registry()
        target = registry.champion_version(MODEL) % 3 + 1
        started = time.perf_counter()
        promote(registry, MODEL, target, actor="bench", reason="a promotion under load")
        with httpx.Client(base_url=self.server.url) as client:
            while client.get(f"/v1/models/{MODEL}").headers["X-Model-Version"] != str(target):
                time.sleep(0.005)
        self.pickup_s = time.perf_counter() - started


def latency(server, bodies: list[bytes], switcher: _Switcher | None) -> dict:
    import httpx

    times = []
    with httpx.Client(base_url=server.url, headers={"content-type": "application/json"}) as client:
        for body in bodies[:50]:  # warm the connection and the server
            client.post(URL, content=body).raise_for_status()
        if switcher:
            switcher.thread.start()
        for body in bodies:
            started = time.perf_counter()
            client.post(URL, content=body).raise_for_status()
            times.append(time.perf_counter() - started)
    if switcher:
        switcher.thread.join()
    times.sort()
    return {"requests": len(times), "p50_ms": 1000 * times[len(times) // 2],
            "p99_ms": 1000 * times[int(len(times) * 0.99) - 1], "max_ms": 1000 * times[-1],
            "pickup_s": switcher.pickup_s if switcher else None}


def throughput(server, bodies: list[bytes], rows: int, clients: int, switcher: _Switcher | None) -> dict:
    import httpx

    done = [0] * clients
    failures: list[str] = []

    def run(k: int) -> None:
        with httpx.Client(base_url=server.url, headers={"content-type": "application/json"}, timeout=60) as client:
            for body in bodies[k::clients]:
                answer = client.post(URL, content=body)
                if answer.status_code != 200:
                    failures.append(answer.text[:200])
                done[k] += 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    if switcher:
        switcher.thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if switcher:
        switcher.thread.join()
    return {"requests": sum(done), "rows_per_s": sum(done) * rows / elapsed, "failures": len(failures),
            "pickup_s": switcher.pickup_s if switcher else None}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def swap_memory(versions, server, swaps: int) -> dict:
    """The server's RSS before and after ``swaps`` promotions, each served before the next (1.2 s apart)."""
    import httpx

    from include.lifecycle.promotion import promote

    registry = versions.registry()
    before = _rss_mb(server.proc.pid)
    for k in range(swaps):
        target = registry.champion_version(MODEL) % 3 + 1
        promote(registry, MODEL, target, actor="bench", reason=f"memory over swaps ({k})")
        while httpx.get(f"{server.url}/v1/models/{MODEL}").headers["X-Model-Version"] != str(target):
            time.sleep(0.01)
        time.sleep(1.2)
    return {"swaps": swaps, "rss_before_mb": before, "rss_after_mb": _rss_mb(server.proc.pid)}


def _report(args, results: dict) -> str:
    lat, lat_sw, thr, thr_sw = (results[k] for k in ("latency", "latency_switch", "throughput", "throughput_switch"))

    def pickup(r: dict) -> str:
        return "-" if r["pickup_s"] is None else f"{r['pickup_s'] * 1000:.0f} ms"

    lines = [
        "# Serving benchmark (`python -m include serve`)", "",
        f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end (the machine is shared). "
        "Server: one uvicorn process (uvloop, httptools), client: httpx in the same "
        "machine (it shares the cores). Model: the drone schema's MLP as training builds it (64 and 32 hidden units). "
        f"Command: `.venv/bin/python bench/bench_serving.py --requests {args.requests} --batches {args.batches} "
        f"--clients {args.clients} --swaps {args.swaps}`.", "",
        "| run | requests | p50 | p99 | max | promotion served after |", "|---|---:|---:|---:|---:|---:|",
        f"| 1 row, back to back | {lat['requests']} | {lat['p50_ms']:.2f} ms | {lat['p99_ms']:.2f} ms | "
        f"{lat['max_ms']:.1f} ms | - |",
        f"| 1 row, a promotion in the middle | {lat_sw['requests']} | {lat_sw['p50_ms']:.2f} ms | "
        f"{lat_sw['p99_ms']:.2f} ms | {lat_sw['max_ms']:.1f} ms | {pickup(lat_sw)} |", "",
        "| run | requests of 1,000 rows | rows/s | failed | promotion served after |", "|---|---:|---:|---:|---:|",
        f"| {args.clients} clients | {thr['requests']} | {thr['rows_per_s']:,.0f} | {thr['failures']} | - |",
        f"| {args.clients} clients, a promotion in the middle | {thr_sw['requests']} | {thr_sw['rows_per_s']:,.0f} | "
        f"{thr_sw['failures']} | {pickup(thr_sw)} |", "",
        f"Server RSS over {results['memory']['swaps']} promotions (each served, 1.2 s apart): "
        f"{results['memory']['rss_before_mb']:.0f} MiB before, {results['memory']['rss_after_mb']:.0f} MiB after.", "",
        "Targets: p99 <= 20 ms for one row, >= 20,000 rows/s batched.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="1-row requests per latency run")
    parser.add_argument("--batches", type=int, default=300, help="1,000-row requests per throughput run")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--swaps", type=int, default=20, help="promotions for the memory figure")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "serving.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = make_versions(Path(tmp))
        server = Server(versions.env, log=Path(tmp) / "serve.log").start()
        try:
            ones, thousands = _bodies(versions, 1, args.requests), _bodies(versions, 1000, 20)
            batches = [thousands[k % len(thousands)] for k in range(args.batches)]
            results = {"latency": latency(server, ones, None)}
            print("1 row:", results["latency"])
            results["latency_switch"] = latency(server, ones, _Switcher(versions, server, 1.0))
            print("1 row, promotion:", results["latency_switch"])
            results["throughput"] = throughput(server, batches, 1000, args.clients, None)
            print("1000 rows:", results["throughput"])
            results["throughput_switch"] = throughput(server, batches, 1000, args.clients,
                                                      _Switcher(versions, server, 2.0))
            print("1000 rows, promotion:", results["throughput_switch"])
            results["memory"] = swap_memory(versions, server, args.swaps)
            print("memory:", results["memory"])
        finally:
            code, output = server.stop()
            if code != 0:
                print(output[-3000:])
    publish(_report(args, results), args.out)


if __name__ == "__main__":
    main()
