"""SIGKILL of a rebuild (`python -m include rebuild run`) in its ingest, its training, its registration and its switch,
at chosen and at random moments, then a rerun: the new generation holds every row once, in date order, every offset
is trained once, one version per checkpoint, one switch. A request made while it is unfinished joins it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from include.history import db
from include.ingest.interval import ingest_files
from include.ingest.ledger import Ledger
from include.lifecycle.generations import Generations
from include.rebuild import records
from tests.lifecycle import LifecycleRunner, assert_no_half_state, week_files
from tests.support import PROJECT, process_env, read_topic

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROWS_PER_WEEK = 3360


def _rebuild(env: dict, fault: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "include", "rebuild", "run"], env=process_env(env, fault),
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_rebuild_sigkilled_anywhere_resumes_and_duplicates_nothing(tmp_path, kafka_bootstrap, fault_row):
    from include.training.trainer import TrainOptions, train

    runner = LifecycleRunner(tmp_path, kafka_bootstrap, extra_env={"RETRAIN_REBUILD_RUN_RECORDS": "7000"})
    for week in (2, 3, 4):  # three weeks live, one run (one version) each; in this process: one TensorFlow start-up
        runner.ingest(week_files(tmp_path / "landing", week))
        assert train(runner.settings, TrainOptions(mode="replay")).version == week - 1
    older = ingest_files(week_files(tmp_path / "landing", 1), settings=runner.settings)
    assert {f.status for f in older.files} == {"waiting_for_rebuild"}
    sessions = db.session_factory(runner.db_url)
    rebuild_id = older.rebuild["id"]

    kills = ["ingest_before_commit:4", "ingest_after_commit:9", "train_after_step:2", "generation_before_switch:1"]
    rng = random.Random(16)
    runs = 0
    for fault in kills + [None, None]:
        proc = _rebuild(runner.env, fault)
        if fault is None:  # a random moment
            time.sleep(rng.uniform(3.0, 12.0))
            proc.kill()
        out, err = proc.communicate(timeout=600)
        runs += 1
        assert proc.returncode == -9 or (fault is None and proc.returncode == 0), f"{fault}: {err[-3000:]}"
        if runs == 2:  # a request while the rebuild is unfinished joins it
            info, joined = records.request(sessions, runner.topic, "default", reason="by hand too", actor="bob")
            assert joined and info.id == rebuild_id
    final = _rebuild(runner.env)
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-4000:]
    result = json.loads(out)
    # An earlier run may have finished it: one killed at a random moment after its switch but before it printed
    # (or one that ended before its moment came). Then the rerun has nothing to do; the record below says switched.
    assert result["rebuild"] is None or result["decision"]["decision"] == "switch", out[-3000:]

    # The new generation: four weeks, in date order, each row once.
    g2 = f"{runner.topic}.g2"
    messages = read_topic(kafka_bootstrap, g2)
    rows = [(dict(m.headers())["source_file"], int(dict(m.headers())["line"])) for m in messages]
    assert len(rows) == len(set(rows)) == 4 * ROWS_PER_WEEK
    files = [name.decode().rsplit("/", 1)[-1] for name, _ in rows]
    assert files == sorted(files)
    assert len(Ledger(sessions, g2).files("committed")) == 28

    # Its lineage: every offset trained once, one version per checkpoint, nothing half done.
    with sessions() as s:
        batches = list(s.scalars(select(db.BatchMetric).where(db.BatchMetric.model_name == "default.g2")))
    offsets = sorted(m.offset() for m in messages)
    trained = sorted(o for b in batches for o in offsets if b.offsets_from["0"] <= o < b.offsets_to["0"])
    assert trained == offsets, "an offset of the rebuild was trained twice or never"
    assert_no_half_state(runner.registry(), "default.g2")

    # One switch: generation 2 live, serving follows its lineage; the rebuild recorded once.
    assert Generations(sessions, runner.topic).live() == 2
    assert runner.registry().served("default")[0] == "default.g2"
    info = records.get(sessions, rebuild_id)
    assert (info.state, info.decision) == ("switched", "switch") and len(records.all_of(sessions, runner.topic)) == 1
    with sessions() as s:
        switches = s.scalars(select(db.ModelEvent).where(db.ModelEvent.action == "generation_live")).all()
    assert len(switches) == 1
    fault_row("rebuild SIGKILL in its ingest, training and switch, and at 2 random moments; rerun",
              runs=runs + 1, produced=4 * ROWS_PER_WEEK, in_topic=len(rows), trained=len(trained),
              note="generation 2: 28 files in date order, each row once; one switch; a request meanwhile joined")
