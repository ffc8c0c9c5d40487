"""docker-compose.yml and the Dockerfile agree with the code.

Docker is not needed: the compose file is read with PyYAML and its ``${VAR:-default}`` substitutions are
resolved to their defaults, as ``docker compose config`` would with no ``.env``. Each test checks one fact
that would otherwise only fail once the stack is up.

The native stack of ``make run-cluster`` (scripts/cluster.sh) must be the same configuration: the last section runs
its environment script and compares, independently of how infra/cluster/stack.py derives it, the services it plays,
the commands, every Airflow and project variable (an address names the native process playing that service, a
container path the shared folder behind its volume) and the Kafka nodes' replication settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.settings import Settings, settings_from_env  # noqa: E402
from infra.cluster import stack  # noqa: E402
from infra.cluster.stack import environment, interpolate, mounts  # noqa: E402

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"
INIT_SQL_DIR = ROOT / "infra" / "postgres" / "init"

ONE_SHOT_SERVICES = {"airflow-init"}
APISERVER = "airflow-apiserver"

def _interpolate(value: Any) -> Any:
    """Resolve compose variables to their defaults (no variable is set), recursively."""
    return interpolate(value, {})


def _load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as handle:
        return _interpolate(yaml.safe_load(handle))


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services built from the project's Dockerfile are the Airflow ones.
AIRFLOW_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
LONG_RUNNING_SERVICES = sorted(set(SERVICES) - ONE_SHOT_SERVICES)
_environment = environment
_mounts = mounts


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


# --- the native stack (make run-cluster) agrees with compose ---------------------------------------------

CLUSTER_PROFILE = "kafka-cluster"
NATIVE_PORTS = {"CLUSTER_API_PORT": 28081, "CLUSTER_POSTGRES_PORT": 28082, "CLUSTER_REDIS_PORT": 28083,
                "CLUSTER_LOG_PORT": 28085, "KAFKA_CLUSTER_PORT": 28100}
# Each compose service's one port, and the native port of what plays it (for the ports above).
SERVICE_PORTS = {"postgres": (5432, 28082), "redis": (6379, 28083), APISERVER: (8080, 28081),
                 "kafka-1": (9092, 28100), "kafka-2": (9092, 28110), "kafka-3": (9092, 28120)}
CARRIED = ("AIRFLOW__", "AIRFLOW_CONN_", "KAFKA_", "RETRAIN_")
# kafka.sh cluster's property -> compose's variable, for what holds addresses (compared by structure, not text).
ADDRESS_PROPERTIES = {"listeners", "advertised.listeners", "controller.quorum.voters", "listener.security.protocol.map",
                      "log.dirs"}
CLUSTER_NODES = ("kafka-1", "kafka-2", "kafka-3")


def _cluster_compose() -> dict[str, Any]:
    """The compose file as `KAFKA_BROKERS=kafka-1:9092,... docker compose --profile kafka-cluster` reads it."""
    with COMPOSE_FILE.open() as handle:
        return interpolate(yaml.safe_load(handle), {"KAFKA_BROKERS": ",".join(f"{n}:9092" for n in CLUSTER_NODES)})


@pytest.fixture(scope="module")
def native_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("native")
    (root / "kafka").mkdir()
    (root / "kafka" / "cluster.id").write_text(SERVICES["kafka-1"]["environment"]["CLUSTER_ID"] + "\n")
    return root


def _native_shell_env(root: Path) -> dict[str, str]:
    return {"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(root), "CLUSTER_STATE_DIR": str(root / "state"),
            "KAFKA_CLUSTER_DIR": str(root / "kafka"), **{k: str(v) for k, v in NATIVE_PORTS.items()}}


@pytest.fixture(scope="module")
def native_env(native_root) -> dict[str, str]:
    """What every Airflow process of scripts/cluster.sh gets: infra/cluster/env.sh sourced in a clean shell."""
    out = subprocess.run(["bash", "-c", f"source {ROOT}/infra/cluster/env.sh && env -0"], env=_native_shell_env(native_root),
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def cluster_compose_env() -> dict[str, str]:
    """The carried variables of compose's long-running Airflow services with the kafka-cluster profile's brokers."""
    compose = _cluster_compose()
    env: dict[str, str] = {}
    for name in AIRFLOW_SERVICES:
        if name in ONE_SHOT_SERVICES:
            continue
        env.update({k: v for k, v in environment(compose["services"][name]).items() if k.startswith(CARRIED)})
    return env


def test_native_stack_plays_every_long_running_service():
    played = {service for service, _ in stack.PROCESSES.values()} | set(stack.BACKING)
    left_out = set(stack.LEFT_OUT)
    assert played | left_out == set(SERVICES), (
        f"services neither played natively nor left out with a reason: {sorted(set(SERVICES) - played - left_out)}; "
        f"played or left out but not in compose: {sorted((played | left_out) - set(SERVICES))}")
    assert not played & left_out, played & left_out
    assert left_out - {"kafka"} <= ONE_SHOT_SERVICES, f"only the single broker and one-shot services may be left out"
    for node in CLUSTER_NODES:
        assert CLUSTER_PROFILE in SERVICES[node].get("profiles", []), f"{node} is not in the {CLUSTER_PROFILE} profile"
    assert {name for name in stack.PROCESSES if stack.PROCESSES[name][0] == "airflow-worker"} == {"worker-1", "worker-2"}


def test_native_processes_run_the_services_commands():
    for name, command in stack.processes(_cluster_compose()).items():
        service, extra = stack.PROCESSES[name]
        words = SERVICES[service]["command"].split()
        assert command[: len(words) + 1] == ["airflow", *words], f"{name} runs {command}, {service} runs {words}"
        flags = {word for word in command[len(words) + 1:] if word.startswith("-")}
        assert flags <= {"--celery-hostname", "--skip-serve-logs"}, f"{name} adds {flags} to compose's command"
    hostnames = [cmd[cmd.index("--celery-hostname") + 1] for name, cmd in stack.processes().items() if "worker" in name]
    assert len(set(hostnames)) == len(hostnames) == 2, f"two workers on one machine need two names: {hostnames}"


def test_native_env_has_compose_variables_and_declares_the_rest(native_env, cluster_compose_env):
    # KAFKA_CLUSTER_*: where infra/kafka/kafka.sh cluster runs the nodes, not a client setting.
    native = {k for k in native_env if (k.startswith(CARRIED) or k == "AIRFLOW_HOME") and not k.startswith("KAFKA_CLUSTER_")}
    missing = sorted(set(cluster_compose_env) - native - set(stack.DIFFERENT))
    assert not missing, f"compose sets these for the Airflow services, the native stack does not: {missing}"
    extra = sorted(native - set(cluster_compose_env) - set(stack.NATIVE_ONLY))
    assert not extra, f"the native stack sets these, compose does not, and stack.NATIVE_ONLY gives no reason: {extra}"
    stale = sorted(set(stack.NATIVE_ONLY) - native)
    assert not stale, f"stack.NATIVE_ONLY names variables the native stack does not set: {stale}"
    assert "AIRFLOW__CORE__AUTH_MANAGER" not in native_env, "the native stack uses Airflow's default auth manager"
    assert native_env["AIRFLOW__API_AUTH__JWT_SECRET"] not in ("", cluster_compose_env["AIRFLOW__API_AUTH__JWT_SECRET"])


def _same_address(compose_value: str, native_value: str) -> bool:
    """Same value up to addresses: each service's host[:port] in compose is 127.0.0.1 and its native port here."""
    expected = compose_value
    for service, (inside, outside) in sorted(SERVICE_PORTS.items(), key=lambda item: -len(item[0])):
        expected = re.sub(rf"(?<![\w.-]){re.escape(service)}(?::{inside})?(?![\w.-]|://)", f"127.0.0.1:{outside}",
                          expected)
    return expected == native_value


def _same_path(compose_value: str, native_value: str, state: Path) -> bool:
    """A container path on a named volume is the same path under <state>/shared/<volume>; a bind mount's is its
    source folder."""
    worker_mounts = mounts(SERVICES["airflow-worker"])
    for source, target in sorted(worker_mounts, key=lambda m: -len(m[1])):
        if compose_value == target or compose_value.startswith(target + "/"):
            rest = compose_value[len(target):]
            folder = (ROOT / source).resolve() if source.startswith((".", "/")) else state / "shared" / source
            return native_value == f"{folder}{rest}"
    return False


@pytest.mark.parametrize("variable", sorted(k for k in set(environment(SERVICES["airflow-worker"])) - set(stack.DIFFERENT)
                                             if k.startswith(CARRIED)))
def test_native_value_agrees_with_compose(variable, native_env, cluster_compose_env, native_root):
    compose_value, native_value = cluster_compose_env[variable], native_env[variable]
    if compose_value.startswith("/"):
        assert _same_path(compose_value, native_value, native_root / "state"), (variable, compose_value, native_value)
    elif compose_value.startswith("{"):
        compose_json, native_json = json.loads(compose_value), json.loads(native_value)
        assert compose_json.keys() == native_json.keys() and compose_json["conn_type"] == native_json["conn_type"]
        assert {k: v for k, v in compose_json["extra"].items() if k != "bootstrap.servers"} == \
            {k: v for k, v in native_json["extra"].items() if k != "bootstrap.servers"}
        assert _same_address(compose_json["extra"]["bootstrap.servers"], native_json["extra"]["bootstrap.servers"])
    elif compose_value.lower() in ("true", "false"):
        assert native_value.lower() == compose_value.lower(), (variable, compose_value, native_value)
    else:
        assert _same_address(compose_value, native_value), (variable, compose_value, native_value)


def test_native_processes_share_one_folder_for_checkpoints_and_models(native_env, native_root):
    settings = settings_from_env(native_env)
    shared = native_root / "state" / "shared"
    for folder in (settings.checkpoint_dir, settings.models_dir, settings.state_dir):
        assert shared in Path(folder).parents, f"{folder} is not under the shared folder {shared}"
    assert settings.db_url.endswith(f"@127.0.0.1:{NATIVE_PORTS['CLUSTER_POSTGRES_PORT']}/retrain")


def _kafka_sh_properties(root: Path, node: int) -> dict[str, str]:
    out = subprocess.run([str(ROOT / "infra" / "kafka" / "kafka.sh"), "cluster", "config", str(node)],
                         env=_native_shell_env(root), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pairs = (line.split("=", 1) for line in out.stdout.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _compose_properties(node: str) -> dict[str, str]:
    """The apache/kafka image's reading of a node's environment: KAFKA_FOO_BAR -> foo.bar."""
    env = environment(SERVICES[node])
    return {key[len("KAFKA_"):].lower().replace("_", "."): value for key, value in env.items()
            if key.startswith("KAFKA_")}


@pytest.mark.parametrize("node", [1, 2, 3])
def test_kafka_cluster_profile_is_kafka_sh_cluster(node, native_root):
    native, compose = _kafka_sh_properties(native_root, node), _compose_properties(f"kafka-{node}")
    for key in sorted((set(native) | set(compose)) - ADDRESS_PROPERTIES):
        assert key in native and key in compose and native[key] == compose[key], (
            f"kafka-{node}: {key} is {compose.get(key)!r} in compose and {native.get(key)!r} from kafka.sh cluster")
    voters = lambda value: sorted(v.split("@")[0] for v in value.split(","))  # noqa: E731
    assert voters(native["controller.quorum.voters"]) == voters(compose["controller.quorum.voters"]) == ["1", "2", "3"]
    for key in ("listeners", "advertised.listeners"):
        # compose adds PLAINTEXT_HOST, for clients on the Docker host; the listeners the nodes use are the same.
        assert set(_listeners(native[key])) == set(_listeners(compose[key])) - {"PLAINTEXT_HOST"}, key


def test_kafka_cluster_replication_settings(native_root):
    settings = {"default.replication.factor": "3", "min.insync.replicas": "2", "offsets.topic.replication.factor": "3",
                "transaction.state.log.replication.factor": "3", "transaction.state.log.min.isr": "2"}
    for node in (1, 2, 3):
        compose = _compose_properties(f"kafka-{node}")
        assert {k: compose.get(k) for k in settings} == settings, f"kafka-{node}"
    assert len({SERVICES[n]["environment"]["CLUSTER_ID"] for n in CLUSTER_NODES}) == 1, "the nodes need one cluster id"


def test_airflow_services_reach_the_cluster_profile_brokers():
    compose = _cluster_compose()
    env = environment(compose["services"]["airflow-worker"])
    addresses = _bootstrap_addresses(env["KAFKA_BOOTSTRAP_SERVERS"])
    assert [host for host, _ in addresses] == list(CLUSTER_NODES), addresses
    for host, port in addresses:
        assert (host, port) in _advertised_addresses(compose["services"][host]), f"{host}:{port} is not advertised"
    extra = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]
    assert extra["bootstrap.servers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
