"""Session fixtures: a live Kafka broker, unique topic names, a temporary Airflow home."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import PROJECT, Broker, airflow_env, run_airflow, unique  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a live broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else one this session starts.

    The session's own broker uses a separate state folder and port, so a broker from ``make run`` is never
    touched, and it is stopped at the end.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    port = int(os.environ.get("TEST_KAFKA_PORT", "19092"))
    broker = Broker(state_dir=PROJECT / ".state" / f"kafka-test-{port}", port=port)
    already_running = broker.status()  # another session's: use it, and leave it running
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        if not already_running:
            broker.stop()


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return unique("t")


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory, kafka_bootstrap) -> Path:
    """A temporary Airflow home with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow_home")
    result = run_airflow(airflow_env(home, kafka_bootstrap), "db", "migrate")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home
