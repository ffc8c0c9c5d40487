"""Model versions for the serving tests: real Keras models, trained a little on generated rows, registered in a
real (SQLite) registry with real version folders; and a ``python -m include serve`` process to query."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from tests.support import PROJECT, process_env

MODEL = "default"
DAY = date(2026, 1, 5)


@dataclass
class Versions:
    """A state folder whose registry holds ``count`` versions of :data:`MODEL` (version 1 is the champion)."""

    root: Path
    csv: Path  # a generated day of observations (header, labelled)
    env: dict = field(default_factory=dict)

    @property
    def settings(self):
        from include.settings import settings_from_env

        return settings_from_env(self.env)

    def registry(self):
        from include.lifecycle.registry import Registry

        return Registry(self.settings)

    def probabilities(self, version: int, rows: list[str]) -> np.ndarray:
        """What version ``version`` says for ``rows`` (CSV, labelled), through Keras directly, not the server."""
        import keras

        import include.training.model  # noqa: F401 - registers the encoding layer
        from include.schema import load_schema
        from include.training.decode import decode_batch

        info = self.registry().get(MODEL, version)
        model = keras.saving.load_model(str(info.keras_path), compile=False)
        decoded = decode_batch(load_schema("drone"), [r.encode() for r in rows])
        assert not decoded.errors, decoded.errors
        return model.predict(decoded.x, verbose=0).reshape(-1).astype(np.float64)


def make_versions(root: Path, count: int = 3) -> Versions:
    """Train ``count`` models (other seeds, one epoch each on a generated day) and register them in order."""
    from include.demo.generate import generate_range
    from include.lifecycle.versions import VersionSource, register_version
    from include.schema import load_schema
    from include.training.decode import decode_batch
    from include.training.model import build_model

    csv_path = generate_range(DAY, DAY, root / "landing")[0]
    versions = Versions(root, csv_path, {"RETRAIN_STATE_DIR": str(root / "state"), "RETRAIN_SCHEMA": "drone"})
    schema = load_schema("drone")
    lines = csv_path.read_text().splitlines()[1:]
    decoded = decode_batch(schema, [line.encode() for line in lines])
    registry = versions.registry()
    for k in range(count):
        model = build_model(schema, seed=100 * k)  # the architecture training builds
        model.fit(decoded.x[: 400 * (k + 1)], decoded.y[: 400 * (k + 1)], epochs=1, batch_size=100, verbose=0)
        register_version(registry, MODEL, model, VersionSource(
            checkpoint_id=f"checkpoint-{k}", run_id=None, schema_id=schema.id, topic="observations",
            offsets={"0": 400 * (k + 1)}, records_total=400 * (k + 1)))
    return versions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """``python -m include serve`` as a real process on a free port."""

    env: dict
    log: Path  # the process's stdout and stderr (a file: a pipe nobody reads could fill up and block it)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str, timeout: float = 120) -> "Server":
        import httpx

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "include", "serve", "--port", str(self.port), *args],
                                         env=process_env(self.env), cwd=PROJECT, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models/{MODEL}", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"serve did not answer within {timeout}s")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM, then wait: (exit code, output)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not stop on SIGTERM within {timeout}s:\n{self.output()[-4000:]}")
        return self.proc.returncode, self.output()
