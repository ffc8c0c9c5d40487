"""The native CeleryExecutor stack of ``make run-cluster``: docker-compose.yml's configuration, on this machine.

docker-compose.yml is the one source; this module reads it, with its ``kafka-cluster`` profile's brokers, and says
what ``scripts/cluster.sh`` runs without Docker:

* **Processes**: every long-running Airflow service of the file as a process running the service's own command
  (``command: celery worker`` -> ``airflow celery worker``), the worker twice, as ``--scale airflow-worker=2``
  would (:data:`PROCESSES`). The other services are played by the project's scripts (:data:`BACKING`):
  ``postgres`` by infra/postgres/postgres.sh, ``redis`` by infra/redis/redis.sh, ``kafka-1..3`` by
  ``infra/kafka/kafka.sh cluster``.
* **Environment**: the Airflow services' variables (``AIRFLOW__*``, ``AIRFLOW_CONN_*``, ``KAFKA_*``, ``RETRAIN_*``),
  interpolated as ``docker compose`` does (the shell's variables, else the defaults written in the file), then
  translated: a service's address (``postgres``, ``redis:6379``, ``airflow-apiserver:8080``, ``kafka-2:9092``)
  becomes 127.0.0.1 and the port of the process playing it (:class:`Native`); a container path becomes the folder
  behind its mount: a bind mount's source (``./data/landing``), or for a named volume ``<state>/shared/<volume>``,
  one folder every process reads and writes, as workers on several machines share NFS. Checkpoints and model
  versions (``retrain-state``, ``checkpoints``) are therefore in one shared folder.
* **On purpose different** (:data:`DIFFERENT`): the auth manager and the JWT secret; **native only**
  (:data:`NATIVE_ONLY`): what one machine running every process needs (ports of their own, the Airflow home).
  Each entry says why.

tests/unit/test_compose.py checks the result against the file, fact by fact.

    python infra/cluster/stack.py env         ``export`` lines (infra/cluster/env.sh evaluates them): the Airflow
                                              processes' variables and those of the scripts playing the rest
    python infra/cluster/stack.py processes   one line per Airflow process: its name, a tab, its command
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT / "docker-compose.yml"

#: The compose variable naming the brokers the Airflow services use, and its value with the kafka-cluster profile.
BROKERS_VARIABLE = "KAFKA_BROKERS"
CLUSTER_BROKERS = "kafka-1:9092,kafka-2:9092,kafka-3:9092"
CLUSTER_NODES = ("kafka-1", "kafka-2", "kafka-3")

#: Native process -> (the compose service it plays, extra arguments to the service's command).
PROCESSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "api-server": ("airflow-apiserver", ()),
    "scheduler": ("airflow-scheduler", ()),
    "dag-processor": ("airflow-dag-processor", ()),
    "triggerer": ("airflow-triggerer", ()),
    # Two workers on one machine need names of their own; the second leaves serving logs to the first (both
    # write into the same log folder, which the API server reads).
    "worker-1": ("airflow-worker", ("--celery-hostname", "worker-1@%h")),
    "worker-2": ("airflow-worker", ("--celery-hostname", "worker-2@%h", "--skip-serve-logs")),
}

#: The other long-running compose services -> what plays them natively.
BACKING: dict[str, str] = {
    "postgres": "infra/postgres/postgres.sh",
    "redis": "infra/redis/redis.sh",
    **{node: f"infra/kafka/kafka.sh cluster (node {node[-1]})" for node in CLUSTER_NODES},
}

#: Compose services the native stack leaves out, and why.
LEFT_OUT: dict[str, str] = {
    "kafka": "the single broker: the native stack runs the kafka-cluster profile's three nodes instead",
    "airflow-init": "one-shot: scripts/cluster.sh migrates the database itself (`airflow db migrate`)",
}

#: Variables whose native value differs from compose's on purpose:
DIFFERENT = (
    # compose uses the FAB auth manager (its airflow-init creates the users; the image has the provider); natively
    # Airflow's default, the simple auth manager, with a generated password, as `make run`.
    "AIRFLOW__CORE__AUTH_MANAGER",
    # compose has a local default; natively one generated per stack (<state>/jwt_secret, mode 600) unless given.
    "AIRFLOW__API_AUTH__JWT_SECRET",
)

#: Variables only the native stack sets (the rest of its environment comes from infra/airflow/env.sh):
NATIVE_ONLY = (
    "AIRFLOW_HOME",  # the containers use the image's /opt/airflow; natively <state>/airflow
    "AIRFLOW__API__HOST",  # the API server listens on 127.0.0.1 only
    "AIRFLOW__API__PORT",  # compose publishes the container's 8080; natively 8081 (`make run` has 8080)
    # One machine, so ports of their own:
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    # From infra/airflow/env.sh, which every local Airflow of the project sources: the image has dags/ and plugins/ in
    # its default folders, natively they are the project's; the simple auth manager's user and generated password (see
    # AIRFLOW__CORE__AUTH_MANAGER); new DAG files show up within 30 s, as with `make run`.
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
)

#: The prefixes of the variables the stack carries over (the image-specific rest, e.g. DUMB_INIT_SETSID, stays).
CARRIED = ("AIRFLOW__", "AIRFLOW_CONN_", "KAFKA_", "RETRAIN_")

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Resolve compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``$$`` as ``docker compose`` does, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(4)
            operator, default = match.group(2), match.group(3) or ""
            given = variables.get(name)
            if operator == ":-":
                return given if given else default
            if operator == "-":
                return given if given is not None else default
            if operator in (":+", "+"):
                return default if (given if operator == ":+" else given is not None) else ""
            return given or ""

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    return value


def load_compose(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml interpolated with ``variables`` (none: every default, as with an empty environment)."""
    with COMPOSE_FILE.open() as handle:
        return interpolate(yaml.safe_load(handle), variables or {})


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment as strings (mapping or list form)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's volume entries, short or long syntax."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = str(entry).split(":")
            out.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
    return out


def compose_airflow_env(compose: Mapping[str, Any]) -> dict[str, str]:
    """The carried variables of the long-running Airflow services (the same in each, or this fails)."""
    merged: dict[str, str] = {}
    for name in sorted({service for service, _ in PROCESSES.values()}):
        for key, value in environment(compose["services"][name]).items():
            if not key.startswith(CARRIED):
                continue
            if key in merged and merged[key] != value:
                raise ValueError(f"docker-compose.yml sets {key} differently in {name}: {value!r} vs {merged[key]!r}")
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Native:
    """Where the native stack's processes live: its state folder and ports (environment variables, defaults)."""

    state: Path
    api_port: int
    postgres_port: int
    redis_port: int
    kafka_port: int
    log_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Native":
        def port(name: str, default: int) -> int:
            value = env.get(name) or str(default)
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"{name}={value!r} is not a port number")
            return int(value)

        return cls(
            state=Path(env.get("CLUSTER_STATE_DIR") or PROJECT / ".state" / "cluster").resolve(),
            api_port=port("CLUSTER_API_PORT", 8081),
            postgres_port=port("CLUSTER_POSTGRES_PORT", 5433),
            redis_port=port("CLUSTER_REDIS_PORT", 6380),
            kafka_port=port("KAFKA_CLUSTER_PORT", 9192),  # infra/kafka/kafka.sh cluster's own variable
            log_port=port("CLUSTER_LOG_PORT", 8795),
        )

    def addresses(self) -> dict[str, int]:
        """Compose service -> the native port playing its one port."""
        nodes = {node: self.kafka_port + 10 * i for i, node in enumerate(CLUSTER_NODES)}
        return {"postgres": self.postgres_port, "redis": self.redis_port, "airflow-apiserver": self.api_port, **nodes}

    @property
    def shared(self) -> Path:
        """The folder of compose's named volumes: what every process shares."""
        return self.state / "shared"


#: Each service's one port inside the containers (an address that names the service without a port means it).
CONTAINER_PORTS = {"postgres": 5432, "redis": 6379, "airflow-apiserver": 8080, **{n: 9092 for n in CLUSTER_NODES}}


def translate(value: str, native: Native, service_mounts: list[tuple[str, str]]) -> str:
    """A compose value as the native stack needs it: service addresses and container paths replaced."""
    ports = native.addresses()
    names = "|".join(re.escape(name) for name in sorted(ports, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])({names})(?::(\d+))?(?![\w.-]|://)")

    def address(match: re.Match) -> str:
        name, port = match.group(1), match.group(2)
        if port is not None and int(port) != CONTAINER_PORTS[name]:
            raise ValueError(f"{value!r}: {name} has no port {port} in docker-compose.yml")
        return f"127.0.0.1:{ports[name]}"

    if value.startswith("/"):
        for source, target in sorted(service_mounts, key=lambda m: len(m[1]), reverse=True):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                folder = (PROJECT / source).resolve() if source.startswith((".", "/")) else native.shared / source
                return str(folder) + value[len(target.rstrip("/")):]
        raise ValueError(f"{value!r} is on no volume of the Airflow services: the native stack cannot place it")
    return pattern.sub(address, value)


def native_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables scripts/cluster.sh exports for every process, from compose and ``env`` (the shell's)."""
    native = Native.from_env(env)
    variables = {**env, BROKERS_VARIABLE: CLUSTER_BROKERS}  # the kafka-cluster profile, whatever the shell says
    compose = load_compose(variables)
    service_mounts = mounts(compose["services"][PROCESSES["worker-1"][0]])
    out = {key: translate(value, native, service_mounts)
           for key, value in compose_airflow_env(compose).items() if key not in DIFFERENT}
    out["AIRFLOW__API_AUTH__JWT_SECRET"] = env.get("AIRFLOW__API_AUTH__JWT_SECRET") or _jwt_secret(native.state)
    out.update({
        "AIRFLOW_HOME": str(native.state / "airflow"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(native.api_port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(native.log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(native.log_port + 1),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(native.log_port + 2),
    })
    return out


def backing_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of the scripts playing postgres, redis and the Kafka nodes: compose's postgres service's own
    (superuser, password, database) and where each keeps its state and listens."""
    native = Native.from_env(env)
    postgres = environment(load_compose(env)["services"]["postgres"])
    return {
        "CLUSTER_STATE_DIR": str(native.state),
        **{key: value for key, value in postgres.items() if key.startswith("POSTGRES_")},
        "POSTGRES_STATE_DIR": str(native.state / "postgres"), "POSTGRES_PORT": str(native.postgres_port),
        "REDIS_STATE_DIR": str(native.state / "redis"), "REDIS_PORT": str(native.redis_port),
        "KAFKA_CLUSTER_PORT": str(native.kafka_port),
        # kafka.sh cluster's own default: `infra/kafka/kafka.sh cluster status` finds the nodes without this stack.
        "KAFKA_CLUSTER_DIR": env.get("KAFKA_CLUSTER_DIR") or str(PROJECT / ".state" / "kafka-cluster"),
    }


def _jwt_secret(state: Path) -> str:
    path = state / "jwt_secret"
    if not path.exists():
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def processes(compose: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Native process name -> its command: ``airflow`` + the compose service's command + the extra arguments."""
    compose = compose or load_compose()
    out = {}
    for name, (service, extra) in PROCESSES.items():
        command = compose["services"][service]["command"]
        words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
        out[name] = ["airflow", *words, *extra]
    return out


def main(argv: list[str]) -> int:
    if argv == ["env"]:
        for key, value in sorted({**backing_env(os.environ), **native_env(os.environ)}.items()):
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if argv == ["processes"]:
        for name, command in processes().items():
            print(f"{name}\t{shlex.join(command)}")
        return 0
    print("usage: stack.py {env|processes}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ValueError as exc:
        print(f"stack.py: {exc}", file=sys.stderr)
        sys.exit(1)
