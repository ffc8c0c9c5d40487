"""``python -m include serve`` as a real process, queried over real HTTP with httpx: TF Serving's REST shapes, the
errors, a graceful SIGTERM, and hot swaps under load (no failed request, every answer from a version that was the
champion while the request was in flight)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from include.schema import load_schema
from tests.serving import MODEL, Server, make_versions

pytestmark = pytest.mark.integration

SCHEMA = load_schema("drone")


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    return make_versions(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(versions):
    server = Server(versions.env, log=versions.root / "serve.log").start("--model-name", MODEL,
                                                                         "--model-name", "untrained")
    yield server
    code, output = server.stop()
    assert code == 0, output[-3000:]


def _rows(versions, n: int, start: int = 0) -> list[str]:
    return versions.csv.read_text().splitlines()[1 + start: 1 + start + n]


def _instance(row: str, label: bool = True) -> dict:
    fields = dict(zip(SCHEMA.names, row.split(",")))
    for name in ("shop_id", "x", "y", "busy"):
        fields[name] = int(fields[name])  # numbers as JSON numbers, as a client sends them
    if not label:
        del fields[SCHEMA.label]
    return fields


def _predict(server, rows_or_instances, path: str = f"/v1/models/{MODEL}:predict") -> httpx.Response:
    return httpx.post(server.url + path, json={"instances": rows_or_instances}, timeout=30)


def test_predictions_from_the_champion_and_from_a_version(versions, server):
    rows = _rows(versions, 50)
    instances = [_instance(r, label=k % 2 == 0) for k, r in enumerate(rows)]  # the label is optional
    for path, version in ((f"/v1/models/{MODEL}:predict", 1), (f"/v1/models/{MODEL}/versions/2:predict", 2)):
        answer = _predict(server, instances, path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Version"] == str(version)
        predictions = answer.json()["predictions"]
        expected = versions.probabilities(version, rows)
        np.testing.assert_allclose([p["probability"] for p in predictions], expected, atol=2e-6)
        assert [p["label"] for p in predictions] == [int(p >= 0.5) for p in (q["probability"] for q in predictions)]
        assert set(predictions[0]) == {"probability", "label"}


def test_model_status_in_tf_servings_shape(server):
    answer = httpx.get(f"{server.url}/v1/models/{MODEL}")
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    status = answer.json()["model_version_status"]
    assert status[0] == {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    answer = httpx.get(f"{server.url}/v1/models/{MODEL}/versions/3")
    assert answer.status_code == 200
    assert answer.json() == {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.mark.parametrize("method, path, fragment", [
    ("POST", "/v1/models/nope:predict", "Servable not found for request: Latest(nope)"),
    ("POST", f"/v1/models/{MODEL}/versions/9:predict", f"Servable not found for request: Specific({MODEL}, 9)"),
    ("POST", f"/v1/models/{MODEL}/versions/x:predict", f"Servable not found for request: Specific({MODEL}, x)"),
    ("GET", "/v1/models/nope", "Servable not found for request: Latest(nope)"),
    ("GET", f"/v1/models/{MODEL}/versions/9", f"Servable not found for request: Specific({MODEL}, 9)"),
    ("GET", "/v2/nothing", "Not Found"),
])
def test_unknown_model_version_or_route_is_404_in_tf_servings_error_shape(versions, server, method, path, fragment):
    answer = httpx.request(method, server.url + path, json={"instances": [_instance(_rows(versions, 1)[0])]})
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"} and fragment in answer.json()["error"]


def test_a_model_name_without_a_champion_yet(versions, server):
    answer = _predict(server, [_instance(_rows(versions, 1)[0])], "/v1/models/untrained:predict")
    assert answer.status_code == 503 and "has no champion yet" in answer.json()["error"]
    answer = httpx.get(f"{server.url}/v1/models/untrained")
    assert answer.status_code == 404 and answer.json() == {"error": "Could not find any versions of model untrained"}


def test_bad_instances_are_400_naming_each_index_and_reason_and_a_huge_body_413(versions, server):
    good = _instance(_rows(versions, 1)[0])
    instances = [good, {**good, "x": 25}, {**good, "shop_type": "bakery"}, 7, {"x": 1}, {**good, "colour": "red"}]
    answer = _predict(server, instances)
    assert answer.status_code == 400 and answer.headers["X-Model-Version"] == "1"
    error = answer.json()["error"]
    assert error.startswith("5 of 6 instances refused, nothing scored")
    for fragment in ("instance 1: field 'x' = '25' is above max 19", "instance 2: field 'shop_type' = 'bakery'",
                     "instance 3 is not an object keyed by column name", "instance 4: missing field(s)",
                     "instance 5: unknown column(s) ['colour']"):
        assert fragment in error
    assert "instance 0" not in error
    answer = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", content=b" " * (64 * 2**20 + 1), timeout=60)
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    for body in (b"not json", b'{"inputs": []}', b"[1, 2]"):
        answer = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", content=body)
        assert answer.status_code == 400 and "error" in answer.json()


class _Load:
    """Client threads sending 1-row and 20-row requests back to back, recording each one's flight and answer."""

    def __init__(self, server, instances: list[dict], threads: int = 4) -> None:
        self.server, self.instances = server, instances
        self.stop = threading.Event()
        self.records: list[tuple[float, float, int, str | None]] = []  # sent, answered, status, version
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def _run(self, k: int) -> None:
        url = f"{self.server.url}/v1/models/{MODEL}:predict"
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                size = 20 if (n + k) % 3 == 0 else 1
                body = {"instances": self.instances[n % 50: n % 50 + size]}
                sent = time.monotonic()
                try:
                    answer = client.post(url, json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                answered = time.monotonic()
                ok = answer.status_code == 200 and len(answer.json()["predictions"]) == size
                self.records.append((sent, answered, answer.status_code if ok else -answer.status_code,
                                     answer.headers.get("X-Model-Version")))
                n += 1

    def __enter__(self) -> "_Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _served(server) -> str:
    return httpx.get(f"{server.url}/v1/models/{MODEL}", timeout=30).headers["X-Model-Version"]


def test_hot_swap_under_load_fails_no_request(versions, server):
    """5 promotions and rollbacks while 4 clients send requests continuously.

    Version v is the champion from the moment its switch is requested (``begun``: the database pointer changes
    during the promote/rollback call) until the server answers that the next switch is live (``live``: its status
    names the next version; until then the server legitimately still serves v, which was the champion when it
    last read the pointer). Every answer must come from a version whose champion interval overlaps the request's
    flight, and no request may fail.
    """
    from include.lifecycle.promotion import promote, rollback

    registry = versions.registry()
    instances = [_instance(r, label=False) for r in _rows(versions, 100)]
    assert _served(server) == "1"
    intervals = {"1": [[0.0, None]]}  # version -> [begun, live-of-the-next]
    current = "1"
    with _Load(server, instances) as load:
        time.sleep(1.0)
        for switch in (lambda: promote(registry, MODEL, 2, actor="test", reason="2"),
                       lambda: promote(registry, MODEL, 3, actor="test", reason="3"),
                       lambda: rollback(registry, MODEL, actor="test", reason="back to 2"),
                       lambda: rollback(registry, MODEL, actor="test", reason="back to 1", to_version=1),
                       lambda: promote(registry, MODEL, 3, actor="test", reason="3 again")):
            begun = time.monotonic()
            new = str(switch().version)
            while _served(server) != new:
                time.sleep(0.01)
            live = time.monotonic()
            intervals[current][-1][1] = live
            intervals.setdefault(new, []).append([begun, None])
            current = new
            time.sleep(1.0)  # requests answered by the new version alone
    intervals[current][-1][1] = float("inf")

    assert load.failures == []
    assert len(load.records) > 100
    assert [r for r in load.records if r[2] != 200] == []
    stray = [(sent, answered, version) for sent, answered, _, version in load.records
             if not any(begun <= answered and sent <= live for begun, live in intervals.get(version, []))]
    assert stray == [], f"answers from a version that was not the champion during the request: {stray[:5]}"
    served = {r[3] for r in load.records}
    assert served == {"1", "2", "3"}


def test_sigterm_stops_the_server_gracefully(versions, tmp_path):
    server = Server(versions.env, log=tmp_path / "serve.log").start()
    assert _predict(server, [_instance(_rows(versions, 1)[0])]).status_code == 200
    code, output = server.stop()
    assert code == 0
    assert "Shutting down" in output and "Finished server process" in output and "Traceback" not in output
