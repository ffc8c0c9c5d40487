"""One settings object for the whole project.

Every tunable comes from here: environment variables with defaults, and for Kafka clients the Airflow
Connection (``kafka_default``) when running inside Airflow. No other module reads ``os.environ``.
This module must never import TensorFlow, Airflow or Kafka at top level: DAG files import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value != "" else default


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _env(env, name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _env(env, name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from exc


@dataclass(frozen=True)
class Settings:
    """Project configuration. Build it with :func:`get_settings`; override fields with ``replace``."""

    state_dir: Path = PROJECT_ROOT / ".state"
    # Kafka
    kafka_conn_id: str = "kafka_default"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Extra librdkafka settings (SASL/SSL...) for use outside Airflow, passed through untouched.
    kafka_extra_config: Mapping[str, Any] = field(default_factory=dict)
    topic: str = "drone-observations"
    dlq_topic: str = "drone-observations.dlq"
    topic_partitions: int = 1
    topic_retention_ms: int = -1
    # Data
    landing_dir: str = str(PROJECT_ROOT / "data" / "landing")
    schema: str = "drone"
    max_bad_fraction: float = 0.01
    # History database and checkpoints
    db_url: str = ""
    checkpoint_dir: Path = PROJECT_ROOT / ".state" / "checkpoints"
    # Training
    consumer_group: str = "drone-trainer"
    batch_messages: int = 100
    stream_timeout_s: float = 10.0
    # Fault injection for the test suites: "<stage>" or "<stage>:<count>" kills the process with SIGKILL
    # when that stage is reached (the count-th time). Empty in production.
    fault_point: str = ""

    def __post_init__(self) -> None:
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{self.state_dir / 'history.db'}")

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables (``os.environ`` by default)."""
    env = os.environ if env is None else env
    state_dir = Path(_env(env, "RETRAIN_STATE_DIR", str(PROJECT_ROOT / ".state")))
    extra_raw = _env(env, "KAFKA_CONFIG_JSON", "{}")
    try:
        extra = json.loads(extra_raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"KAFKA_CONFIG_JSON is not valid JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise ValueError("KAFKA_CONFIG_JSON must be a JSON object of librdkafka settings")
    topic = _env(env, "RETRAIN_TOPIC", "drone-observations")
    return Settings(
        state_dir=state_dir,
        kafka_conn_id=_env(env, "KAFKA_CONN_ID", "kafka_default"),
        kafka_bootstrap_servers=_env(env, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        kafka_extra_config=extra,
        topic=topic,
        dlq_topic=_env(env, "RETRAIN_DLQ_TOPIC", f"{topic}.dlq"),
        topic_partitions=_env_int(env, "RETRAIN_TOPIC_PARTITIONS", 1),
        topic_retention_ms=_env_int(env, "RETRAIN_TOPIC_RETENTION_MS", -1),
        landing_dir=_env(env, "RETRAIN_LANDING_DIR", str(PROJECT_ROOT / "data" / "landing")),
        schema=_env(env, "RETRAIN_SCHEMA", "drone"),
        max_bad_fraction=_env_float(env, "RETRAIN_MAX_BAD_FRACTION", 0.01),
        db_url=_env(env, "RETRAIN_DB_URL", ""),
        checkpoint_dir=Path(_env(env, "RETRAIN_CHECKPOINT_DIR", str(state_dir / "checkpoints"))),
        consumer_group=_env(env, "RETRAIN_CONSUMER_GROUP", "drone-trainer"),
        batch_messages=_env_int(env, "RETRAIN_BATCH_MESSAGES", 100),
        stream_timeout_s=_env_float(env, "RETRAIN_STREAM_TIMEOUT_S", 10.0),
        fault_point=_env(env, "RETRAIN_FAULT_POINT", ""),
    )


def get_settings() -> Settings:
    """The settings in force now (environment read at call time, so tests can change it)."""
    return settings_from_env()
