"""The table `make run` ends with: the default mode learns the demo data, and its drift shows in the right week.

Three weeks of generated data whose rule changes on the first day of week 3, ingested into a real broker and trained
by `python -m include train` with no mode given (a new model: the default, replay). The table must give every week
its batch ceiling and Bayes-optimal accuracy, and the drift event in week 3 with how many records after the change
it was raised.
"""

from __future__ import annotations

import re
from datetime import date

import pytest

from include.demo.generate import generate_range
from include.demo.main_job import accuracy_table
from include.ingest.interval import ingest_files
from include.settings import settings_from_env
from tests.support import Runner, unique

pytestmark = pytest.mark.integration


def test_default_mode_learns_and_the_table_shows_ceiling_bayes_and_the_drift(tmp_path, kafka_bootstrap):
    topic = unique("weekly")
    landing = tmp_path / "landing"
    paths = generate_range(date(2026, 1, 5), date(2026, 1, 25), landing, seed=7, drift_from=date(2026, 1, 19))
    trainer = Runner(tmp_path, kafka_bootstrap, topic, schema="drone")
    settings = settings_from_env({**trainer.env, "RETRAIN_LANDING_DIR": str(landing)})
    assert ingest_files([p for p in paths if p.suffix == ".csv"], settings=settings).rows == 21 * 2400

    summary = trainer.ok()
    assert summary["records"] == 21 * 2400
    (run,) = trainer.training_runs()
    assert run.mode == "replay"  # a new model learns by default

    table = accuracy_table(settings)
    print(table)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (2026-W0\d) \|.*$", table, re.M)}
    assert sorted(rows) == ["2026-W02", "2026-W03", "2026-W04"]
    cells = {week: [c.strip() for c in line.strip("|").split("|")] for week, line in rows.items()}
    for week, (_, records, preq, window, ceiling, bayes, drift) in cells.items():
        assert records == "16800"
        assert 0.5 < float(ceiling) <= 1.0 and 0.85 < float(bayes) < 1.0, (week, ceiling, bayes)
        assert float(window) <= float(bayes) + 0.03
    assert cells["2026-W02"][6] == "0" and cells["2026-W03"][6] == "0"  # no false alarm before the change
    found = re.fullmatch(r"1 \(\+(\d+) records after the change\)", cells["2026-W04"][6])
    assert found, cells["2026-W04"][6]
    assert int(found.group(1)) <= 2400  # within the first day of the new rule
    assert float(cells["2026-W04"][3]) >= float(cells["2026-W04"][4]) - 0.05  # recovered within the drift week
    assert "the generator's rule changes on 2026-01-19, after 33600 records" in table
