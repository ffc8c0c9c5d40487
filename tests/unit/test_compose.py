"""docker-compose.yml and the Dockerfile agree with the code.

Docker is not needed: the compose file is read with PyYAML and its ``${VAR:-default}`` substitutions are
resolved to their defaults, as ``docker compose config`` would with no ``.env``. Each test checks one fact
that would otherwise only fail once the stack is up.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.settings import Settings, settings_from_env  # noqa: E402

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"
INIT_SQL_DIR = ROOT / "infra" / "postgres" / "init"

ONE_SHOT_SERVICES = {"airflow-init"}
APISERVER = "airflow-apiserver"

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _interpolate(value: Any) -> Any:
    """Resolve compose variables to their defaults (no variable is set), recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            operator, default = match.group(2), match.group(3)
            return default if operator in (":-", "-") else ""

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


def _load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as handle:
        return _interpolate(yaml.safe_load(handle))


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services built from the project's Dockerfile are the Airflow ones.
AIRFLOW_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
LONG_RUNNING_SERVICES = sorted(set(SERVICES) - ONE_SHOT_SERVICES)


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = entry.split(":")
            if len(parts) == 1:
                mounts.append(("", parts[0]))  # anonymous volume
            else:
                mounts.append((parts[0], parts[1]))
    return mounts


def _is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}; an empty host means every interface."""
    listeners = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, address = item.split("://", 1)
        host, port = address.rsplit(":", 1)
        listeners[name] = (host, int(port))
    return listeners


def _bootstrap_addresses(value: str) -> list[tuple[str, int]]:
    addresses = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, port = item.rsplit(":", 1)
        addresses.append((host, int(port)))
    return addresses


def _declared_variables() -> set[str]:
    """The environment variables the settings declare (each field's alias)."""
    return {str(f.validation_alias) for f in Settings.model_fields.values() if f.validation_alias}


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """The environment the Celery worker, which runs the tasks, gets."""
    return _environment(SERVICES["airflow-worker"])


@pytest.fixture(scope="module")
def kafka_service() -> dict[str, Any]:
    return SERVICES["kafka"]


# --- structure -------------------------------------------------------------------------------------------


def test_airflow_services_are_present():
    expected = {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-init",
    }
    missing = expected - set(AIRFLOW_SERVICES)
    assert not missing, f"services missing or not built from the project's Dockerfile (build: .): {sorted(missing)}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_builds_project_dockerfile(name):
    build = SERVICES[name]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context in (".", "./"), f"{name} builds from {context!r}, not the project's Dockerfile at the root"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_names_existing_services(name):
    depends_on = SERVICES[name].get("depends_on") or {}
    unknown = sorted(set(depends_on) - set(SERVICES))
    assert not unknown, f"{name} depends on services that do not exist: {unknown}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_named_volumes_are_declared(name):
    declared = set(COMPOSE.get("volumes") or {})
    used = {source for source, _ in _mounts(SERVICES[name]) if _is_named_volume(source)}
    undeclared = sorted(used - declared)
    assert not undeclared, f"{name} mounts named volumes not declared under top-level volumes: {undeclared}"


@pytest.mark.parametrize("name", LONG_RUNNING_SERVICES)
def test_long_running_service_has_healthcheck(name):
    healthcheck = SERVICES[name].get("healthcheck") or {}
    assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"


# --- Kafka -----------------------------------------------------------------------------------------------


def test_kafka_image_is_3_9(kafka_service):
    # tensorflow-io 0.37.1's librdkafka 1.5.0 needs protocol versions that Kafka 4.0 removed.
    image = kafka_service["image"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", image), f"kafka image must be apache/kafka:3.9.x, got {image!r}"


def test_kafka_single_node_internal_topics_have_one_replica(kafka_service):
    env = _environment(kafka_service)
    wrong = {
        name: env.get(name)
        for name in (
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        )
        if env.get(name) != "1"
    }
    assert not wrong, f"a single broker cannot hold more than one replica; set these to 1: {wrong}"


def _advertised_addresses(kafka: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """(host, port) -> listener name, for advertised listeners the broker also binds."""
    env = _environment(kafka)
    advertised = _listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    bound = _listeners(env.get("KAFKA_LISTENERS", ""))
    return {
        address: name
        for name, address in advertised.items()
        if name in bound and bound[name][1] == address[1]
    }


def _check_bootstrap(value: str, kafka: Mapping[str, Any], what: str) -> None:
    addresses = _bootstrap_addresses(value)
    assert addresses, f"{what} is empty"
    advertised = _advertised_addresses(kafka)
    container_names = {"kafka", kafka.get("hostname"), kafka.get("container_name")} - {None}
    for host, port in addresses:
        assert (host, port) in advertised, (
            f"{what} names {host}:{port}, which is not a listener the kafka service advertises and binds: "
            f"{sorted(advertised)}"
        )
        assert host in container_names, (
            f"{what} names host {host!r}; other containers reach the broker as one of {sorted(container_names)}"
        )


def test_kafka_bootstrap_servers_match_an_advertised_listener(worker_env, kafka_service):
    _check_bootstrap(worker_env.get("KAFKA_BOOTSTRAP_SERVERS", ""), kafka_service, "KAFKA_BOOTSTRAP_SERVERS")


def test_kafka_connection_extra_matches_an_advertised_listener(worker_env, kafka_service):
    conn_id = settings_from_env(worker_env).kafka_conn_id
    conn = json.loads(worker_env[f"AIRFLOW_CONN_{conn_id.upper()}"])
    assert conn.get("conn_type") == "kafka", f"the Kafka connection's conn_type is {conn.get('conn_type')!r}"
    bootstrap = (conn.get("extra") or {}).get("bootstrap.servers", "")
    _check_bootstrap(bootstrap, kafka_service, f"AIRFLOW_CONN_{conn_id.upper()} extra bootstrap.servers")


def test_kafka_connection_id_is_the_settings_default(worker_env):
    name = f"AIRFLOW_CONN_{Settings().kafka_conn_id.upper()}"
    assert name in worker_env, f"compose defines no {name} for Settings().kafka_conn_id={Settings().kafka_conn_id!r}"


def test_kafka_connection_id_in_env_has_a_connection(worker_env):
    conn_id = settings_from_env(worker_env).kafka_conn_id
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    assert name in worker_env, f"KAFKA_CONN_ID={conn_id!r} but compose defines no {name}"


# --- project settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_project_env_vars_are_read_by_settings(name):
    env = _environment(SERVICES[name])
    settings_from_env(env)  # every value compose sets is valid
    ours = {key for key in env if key.startswith(("RETRAIN_", "KAFKA_"))}
    unread = sorted(ours - _declared_variables())
    assert not unread, f"{name} sets variables that include.settings never reads: {unread}"


@pytest.mark.parametrize(
    "variable, field, convert",
    [
        ("RETRAIN_DB_URL", "db_url", str),
        ("RETRAIN_STATE_DIR", "state_dir", Path),
        ("RETRAIN_CHECKPOINT_DIR", "checkpoint_dir", Path),
        ("RETRAIN_LANDING_DIR", "landing_dir", str),
        ("RETRAIN_TOPIC_PARTITIONS", "topic_partitions", int),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers", str),
        ("KAFKA_CONN_ID", "kafka_conn_id", str),
    ],
)
def test_settings_reflect_compose_env(worker_env, variable, field, convert):
    assert variable in worker_env, f"compose does not set {variable} for the worker"
    settings = settings_from_env(worker_env)
    expected = convert(worker_env[variable])
    assert getattr(settings, field) == expected, (
        f"{variable}={worker_env[variable]!r} gives Settings.{field}={getattr(settings, field)!r}, expected {expected!r}"
    )


@pytest.mark.parametrize("variable", ["RETRAIN_CHECKPOINT_DIR", "RETRAIN_STATE_DIR"])
@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_project_dir_is_on_a_named_volume(name, variable):
    env = _environment(SERVICES[name])
    path = Path(env[variable])
    named = {Path(target): source for source, target in _mounts(SERVICES[name]) if _is_named_volume(source)}
    on = [source for target, source in named.items() if path == target or target in path.parents]
    assert on, f"{name}: {variable}={path} is not on a named volume, so it would vanish with the container"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_landing_dir_is_mounted(name):
    env = _environment(SERVICES[name])
    path = Path(env["RETRAIN_LANDING_DIR"])
    targets = [Path(target) for source, target in _mounts(SERVICES[name]) if source]
    assert any(path == target or target in path.parents for target in targets), (
        f"{name}: RETRAIN_LANDING_DIR={path} is not on a bind mount or volume"
    )


def test_retrain_db_is_created_by_postgres_init(worker_env):
    match = re.fullmatch(r"[\w+]+://[^@]*@([^/:]+)(?::\d+)?/(\w+)", worker_env["RETRAIN_DB_URL"])
    assert match, f"RETRAIN_DB_URL={worker_env['RETRAIN_DB_URL']!r} is not a server URL with a database name"
    host, database = match.groups()
    assert host in SERVICES, f"RETRAIN_DB_URL points at host {host!r}, which is not a compose service"
    created = {
        name.lower()
        for sql in sorted(INIT_SQL_DIR.glob("*.sql"))
        for name in re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)", sql.read_text(), flags=re.IGNORECASE)
    }
    assert database in created, f"no script in {INIT_SQL_DIR.relative_to(ROOT)} creates database {database!r}"
    mounts = {Path(target): source for source, target in _mounts(SERVICES[host])}
    assert Path(mounts.get(Path("/docker-entrypoint-initdb.d"), "")) == Path("./infra/postgres/init"), (
        f"{host} does not mount ./infra/postgres/init at /docker-entrypoint-initdb.d"
    )


# --- Airflow API server ----------------------------------------------------------------------------------


def test_apiserver_publishes_port_8080():
    published = []
    for entry in SERVICES[APISERVER].get("ports") or []:
        if isinstance(entry, dict):
            published.append((str(entry.get("published")), str(entry.get("target"))))
        else:
            parts = str(entry).split(":")
            published.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
    assert ("8080", "8080") in published, f"{APISERVER} must publish 8080:8080, it publishes {published}"


def test_execution_api_url_points_at_apiserver(worker_env):
    url = worker_env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
    assert url == f"http://{APISERVER}:8080/execution/", f"workers would send task calls to {url!r}"


# --- Dockerfile ------------------------------------------------------------------------------------------


def _dockerfile_from() -> tuple[str, str]:
    match = re.search(r"^FROM\s+apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)\b", DOCKERFILE.read_text(), re.M)
    assert match, "Dockerfile does not start FROM apache/airflow:<version>-python<version>"
    return match.group(1), match.group(2)


def test_dockerfile_airflow_version_matches_requirements():
    pin = re.search(r"^apache-airflow==(\S+)", REQUIREMENTS.read_text(), re.M)
    assert pin, "requirements.txt does not pin apache-airflow=="
    image_version, _ = _dockerfile_from()
    assert image_version == pin.group(1), (
        f"Dockerfile's base image has Airflow {image_version}, requirements.txt pins {pin.group(1)}"
    )


def test_dockerfile_python_is_3_11():
    _, python = _dockerfile_from()
    assert python == "3.11", f"Dockerfile's base image has Python {python}; the project is built for 3.11"


@pytest.mark.parametrize("folder", ["include", "dags", "plugins"])
def test_dockerfile_copies_project_folder(folder):
    pattern = rf"^COPY\s+(?:--\S+\s+)*{folder}/?\s+/opt/airflow/{folder}/?\s*$"
    assert re.search(pattern, DOCKERFILE.read_text(), re.M), f"Dockerfile does not COPY {folder}/ to /opt/airflow/{folder}/"


def test_dockerfile_puts_airflow_home_on_pythonpath():
    assert re.search(r"^ENV\s+PYTHONPATH=\S*/opt/airflow\b", DOCKERFILE.read_text(), re.M), (
        "Dockerfile does not put /opt/airflow on PYTHONPATH, so `import include` fails in tasks"
    )
