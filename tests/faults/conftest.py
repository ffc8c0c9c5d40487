"""Fixtures of the fault-injection suite, and its report: one table row per fault, printed at the end.

Each test records what its fault did to the data (:func:`fault_row`): rows produced, rows in the topic
(read_committed), offsets trained, duplicates and losses. At the end of the session the table is printed
through the terminal reporter (so it shows in ``make test``) and written to ``test-artifacts/faults.md``.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.helpers import BASE_PORT, OwnBroker, free_ports, make_postgres, warm_up
from tests.support import PROJECT, Broker

ARTIFACT = PROJECT / "test-artifacts" / "faults.md"
COLUMNS = ("fault", "runs", "rows produced", "rows in topic", "offsets trained", "duplicates", "losses", "result",
           "notes")
# The table's order: process crashes (training, then the model lifecycle), then the broker, storage, Kafka
# semantics, bad input, security.
MODULE_ORDER = ("test_process_kills", "test_lifecycle_kills", "test_broker_faults", "test_storage_faults",
                "test_kafka_faults", "test_bad_input", "test_security")


@dataclass
class Row:
    nodeid: str
    fault: str
    runs: int
    produced: int | None
    in_topic: int | None
    trained: int | None
    duplicates: int
    losses: int
    note: str = ""

    @property
    def order(self) -> int:
        module = self.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        return MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # the suite's own time: setup, call and teardown of its tests

    def table(self) -> list[str]:
        def cell(value) -> str:
            return "-" if value is None else str(value).replace("|", "/")

        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * 6 + ["---", "---"]) + "|"]
        for r in sorted(self.rows, key=lambda r: r.order):  # stable: a module's rows keep their order
            values = (r.fault, r.runs, r.produced, r.in_topic, r.trained, r.duplicates, r.losses,
                      self.outcomes.get(r.nodeid, "not run"), r.note)
            lines.append("| " + " | ".join(cell(v) for v in values) + " |")
        return lines


REPORT_KEY = pytest.StashKey[Report]()


def pytest_configure(config) -> None:
    config.stash[REPORT_KEY] = Report()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "faults" not in item.keywords:
        return
    stash = item.config.stash[REPORT_KEY]
    stash.seconds += report.duration
    outcomes = stash.outcomes
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcomes[item.nodeid] = "passed" if report.passed else ("skipped" if report.skipped else "FAILED")
    elif report.when == "teardown" and report.failed:
        outcomes[item.nodeid] = "FAILED (teardown)"


def pytest_sessionfinish(session, exitstatus) -> None:
    report = session.config.stash.get(REPORT_KEY, None)
    if report is None or not report.rows:
        return
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(
        "# Fault-injection suite\n\n"
        "Each fault was injected against a real broker, database and processes; after recovery every valid CSV row "
        "must be in the topic exactly once (read_committed) and every data offset trained exactly once "
        "(`batch_metrics` offset ranges tile the data offsets). Duplicates and losses count both checks.\n\n"
        + "\n".join(report.table()) + f"\n\nSuite time: {report.seconds / 60:.1f} min.\n",
        encoding="utf-8",
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    report = config.stash.get(REPORT_KEY, None)
    if report is None or not report.rows:
        return
    terminalreporter.section("fault-injection report")
    for line in report.table():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"suite time {report.seconds / 60:.1f} min; also in {ARTIFACT.relative_to(PROJECT)}")


@pytest.fixture
def fault_row(request):
    """Record this test's row(s) of the report: ``fault_row(fault, runs=..., produced=..., ...)``."""
    report = request.config.stash[REPORT_KEY]

    def record(fault: str, *, runs: int, produced: int | None, in_topic: int | None, trained: int | None = None,
               duplicates: int = 0, losses: int = 0, note: str = "") -> None:
        report.rows.append(Row(request.node.nodeid, fault, runs, produced, in_topic, trained, duplicates, losses,
                               note))

    return record


@pytest.fixture(scope="session")
def own_broker(tmp_path_factory):
    """A broker of the suite's own, which tests may SIGKILL: its own ports and state, a SASL/PLAIN listener too.

    The SASL user's password is random per session (never a literal in the repository).
    """
    port = free_ports(BASE_PORT + 4, 3)  # client, controller (+1), SASL (+2)
    user, password = "faults-" + secrets.token_hex(4), secrets.token_urlsafe(18)
    broker = Broker(state_dir=tmp_path_factory.mktemp("own-broker"), port=port,
                    env={"KAFKA_SASL_PLAIN_USERS": f"{user}:{password}", "KAFKA_SASL_PORT": str(port + 2)})
    broker.start()
    own = OwnBroker(broker=broker, sasl_port=port + 2, user=user, password=password)
    try:
        yield own
    finally:
        broker.stop()


@pytest.fixture
def running_broker(own_broker):
    """The suite's own broker, running and answering group requests (restarted if a test left it down)."""
    if not own_broker.broker.status():
        own_broker.start()
    warm_up(own_broker.bootstrap)
    yield own_broker
    if not own_broker.broker.status():
        own_broker.start()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (infra/postgres/postgres.sh, its own port); tests may stop it, it is restarted after."""
    pg = make_postgres()
    try:
        yield pg
    finally:
        pg.stop("fast")
        shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture
def pg(postgres):
    """The private PostgreSQL server, running (started again if a test stopped it)."""
    if not Path(postgres.data / "postmaster.pid").exists():
        postgres.start()
    yield postgres
    if not Path(postgres.data / "postmaster.pid").exists():
        postgres.start()
