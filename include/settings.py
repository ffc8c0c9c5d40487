"""One settings object for the whole project.

Every tunable comes from here: environment variables with defaults (parsed and checked by pydantic-settings), and
for Kafka clients the Airflow Connection (``kafka_default``) when running inside Airflow (see
:mod:`include.kafka.clients`). No other module reads ``os.environ``. A bad value is a :class:`SettingsError` whose
one-line message names the variable, the value and what is expected.

This module must never import TensorFlow, Airflow or Kafka at top level: DAG files import it.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The variables :func:`settings_from_env` was given, when it was given some (else: the process environment).
_GIVEN_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("given_env", default=None)


class SettingsError(ValueError):
    """An environment variable (or an override) has a value the project cannot use."""


def _var(name: str, default: Any, **constraints: Any) -> Any:
    """A field read from the environment variable ``name``."""
    return Field(default, validation_alias=name, **constraints)


class Settings(BaseSettings):
    """Project configuration. Build it with :func:`get_settings`; change fields with :meth:`with_overrides`.

    Derived defaults (``dlq_topic`` and ``requests_topic`` from ``topic``; ``scorer_group`` from
    ``consumer_group``; ``db_url``, ``checkpoint_dir`` and ``models_dir`` from ``state_dir``) follow their source
    unless set themselves.
    """

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, populate_by_name=True, extra="ignore",
    )

    state_dir: Path = _var("RETRAIN_STATE_DIR", PROJECT_ROOT / ".state")
    # Kafka
    kafka_conn_id: str = _var("KAFKA_CONN_ID", "kafka_default", min_length=1)
    kafka_bootstrap_servers: str = _var("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", min_length=1)
    # Extra librdkafka settings (SASL/SSL...) for use outside Airflow, passed through untouched.
    kafka_extra_config: dict[str, Any] = _var("KAFKA_CONFIG_JSON", {})
    topic: str = _var("RETRAIN_TOPIC", "drone-observations", min_length=1)
    dlq_topic: str = _var("RETRAIN_DLQ_TOPIC", "", description="default: <topic>.dlq")
    topic_partitions: int = _var("RETRAIN_TOPIC_PARTITIONS", 1, ge=1)
    topic_retention_ms: int = _var("RETRAIN_TOPIC_RETENTION_MS", -1, ge=-1)
    # Data
    landing_dir: str = _var("RETRAIN_LANDING_DIR", str(PROJECT_ROOT / "data" / "landing"), min_length=1)
    schema_name: str = _var("RETRAIN_SCHEMA", "drone", min_length=1)
    max_bad_fraction: float = _var("RETRAIN_MAX_BAD_FRACTION", 0.01, ge=0.0, le=1.0)
    # History database and checkpoints
    db_url: str = _var("RETRAIN_DB_URL", "", description="default: sqlite:///<state_dir>/history.db")
    checkpoint_dir: Path | None = _var("RETRAIN_CHECKPOINT_DIR", None, description="default: <state_dir>/checkpoints")
    # Training
    consumer_group: str = _var("RETRAIN_CONSUMER_GROUP", "drone-trainer", min_length=1)
    batch_messages: int = _var("RETRAIN_BATCH_MESSAGES", 100, ge=1)
    stream_timeout_s: float = _var("RETRAIN_STREAM_TIMEOUT_S", 10.0, gt=0)
    # Model lifecycle (include.lifecycle): versions, the promotion gate, alerts
    models_dir: Path | None = _var("RETRAIN_MODELS_DIR", None, description="default: <state_dir>/models")
    keep_versions: int = _var("RETRAIN_KEEP_VERSIONS", 5, ge=2)
    gate_tolerance: float = _var("RETRAIN_GATE_TOLERANCE", 0.005, ge=0.0, le=1.0)
    gate_floor: float | None = _var("RETRAIN_GATE_FLOOR", None, ge=0.0, le=1.0)
    gate_min_rows: int = _var("RETRAIN_GATE_MIN_ROWS", 200, ge=1)
    accuracy_floor: float | None = _var("RETRAIN_ACCURACY_FLOOR", 0.7, ge=0.0, le=1.0)
    alert_email_to: str = _var("RETRAIN_ALERT_EMAIL_TO", "")
    smtp_conn_id: str = _var("RETRAIN_SMTP_CONN_ID", "smtp_default", min_length=1)
    # Generations and rebuilds (include.lifecycle.generations, include.rebuild)
    keep_generations: int = _var("RETRAIN_KEEP_GENERATIONS", 1, ge=0,
                                 description="earlier generations kept for switching back")
    rebuild_model: str = _var("RETRAIN_REBUILD_MODEL", "default", min_length=1,
                              description="the model name a rebuild requested by an older file rebuilds")
    rebuild_run_records: int = _var("RETRAIN_REBUILD_RUN_RECORDS", 500_000, ge=1,
                                    description="records per bounded training run of a rebuild")
    # Serving (include.serving): the HTTP scorer and the streaming scorer
    serve_host: str = _var("RETRAIN_SERVE_HOST", "127.0.0.1", min_length=1)
    serve_port: int = _var("RETRAIN_SERVE_PORT", 8501, ge=1, le=65535)
    requests_topic: str = _var("RETRAIN_REQUESTS_TOPIC", "", description="default: <topic>.requests")
    scorer_group: str = _var("RETRAIN_SCORER_GROUP", "", description="default: <consumer_group>.scorer")
    # Fault injection for the test suites: "<stage>" or "<stage>:<count>" kills the process with SIGKILL
    # when that stage is reached (the count-th time). Empty in production.
    fault_point: str = _var("RETRAIN_FAULT_POINT", "")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        given = _GIVEN_ENV.get()
        if given is None:
            return init_settings, env_settings
        return init_settings, _MappingEnvSource(settings_cls, given)

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        # Frozen model: derived values are filled in place once, before anyone sees the object.
        if not self.dlq_topic:
            object.__setattr__(self, "dlq_topic", f"{self.topic}.dlq")
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{self.state_dir / 'history.db'}")
        if self.checkpoint_dir is None:
            object.__setattr__(self, "checkpoint_dir", self.state_dir / "checkpoints")
        if self.models_dir is None:
            object.__setattr__(self, "models_dir", self.state_dir / "models")
        if not self.requests_topic:
            object.__setattr__(self, "requests_topic", f"{self.topic}.requests")
        if not self.scorer_group:
            object.__setattr__(self, "scorer_group", f"{self.consumer_group}.scorer")
        return self

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (by field name), checked like the environment; derived defaults follow."""
        given = self.model_dump(include=self.model_fields_set)
        return _validated(lambda: type(self).model_validate({**given, **changes}), by_alias=False)


class _MappingEnvSource(EnvSettingsSource):
    """The environment source reading a given mapping instead of ``os.environ``: the same parsing either way."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = {k: v for k, v in env.items() if v != ""}  # empty means unset, as in os.environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def _validated(build, *, by_alias: bool = True) -> Settings:
    try:
        return build()
    except ValidationError as exc:
        raise SettingsError(_describe(exc, by_alias)) from None
    except _SourceError as exc:  # a value the source could not even parse (JSON)
        field = next((n for n in Settings.model_fields if f'"{n}"' in str(exc)), None)
        alias = Settings.model_fields[field].validation_alias if field else "a variable"
        raise SettingsError(f"invalid setting: {alias} is not valid JSON ({exc.__cause__})") from None


def _describe(exc: ValidationError, by_alias: bool) -> str:
    """One line per problem: which variable, which value, what is expected."""
    problems = []
    for error in exc.errors():
        where = str(error["loc"][0]) if error["loc"] else "settings"
        if not by_alias and where in Settings.model_fields:
            alias = Settings.model_fields[where].validation_alias
            where = f"{where} ({alias})" if alias else where
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, (str, int, float)) else ""
        problems.append(f"{where}{shown}: {error['msg']}")
    return "invalid setting: " + "; ".join(problems)


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables: ``os.environ`` by default, else exactly ``env``.

    An empty value counts as unset.
    """
    token = _GIVEN_ENV.set(None if env is None else dict(env))
    try:
        return _validated(Settings)
    finally:
        _GIVEN_ENV.reset(token)


def get_settings() -> Settings:
    """The settings in force now (environment read at call time, so tests can change it)."""
    return settings_from_env()
