"""SIGKILL of a registering trainer and of a promotion at each lifecycle fault point, then a restart.

After the restart there is no half state: no version row without complete files, one champion and the pointer
naming it, no temp folder, and every checkpoint that ended a run has its version (caught up by the next run).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from include.history import db
from tests.lifecycle import LifecycleRunner, assert_no_half_state, week_files
from tests.support import PROJECT, process_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def newest_checkpoint(runner: LifecycleRunner) -> str:
    with db.session_factory(runner.db_url)() as s:
        return s.scalars(select(db.CheckpointRecord.checkpoint_id).order_by(db.CheckpointRecord.seq.desc())).first()


@pytest.mark.parametrize("point", ["version_before_register", "version_mid_export", "version_after_export",
                                   "version_after_publish"])
def test_a_trainer_killed_while_registering_is_caught_up_by_the_next_run(tmp_path, kafka_bootstrap, point, fault_row):
    runner = LifecycleRunner(tmp_path, kafka_bootstrap)
    paths = week_files(tmp_path / "landing", 1)
    runner.ingest(paths[:2])
    assert runner.train()["version"] == 1
    runner.ingest(paths[2:3])
    rc, _, err = runner.run("--mode", "replay", fault=point)
    assert rc == -9, err[-3000:]
    registry = runner.registry()
    killed_checkpoint = newest_checkpoint(runner)
    assert killed_checkpoint not in [v.checkpoint_id for v in registry.versions("default")]
    assert_versions_complete(registry)
    summary = runner.train()  # nothing new to train: it only catches up
    assert summary["records"] == 0 and summary["version"] is None
    versions = registry.versions("default")
    assert [v.version for v in versions] == [2, 1] and versions[0].checkpoint_id == killed_checkpoint
    assert versions[0].status == "candidate" and len(versions[0].offsets) == 1
    assert versions[0].metrics["holdout_rows"] == 96  # the killed run's 480 rows, 20 % held out
    assert_no_half_state(registry)
    fault_row(f"trainer SIGKILL while registering a version ({point}), restart", runs=3, produced=None,
              in_topic=None, note="the next run registered the killed run's checkpoint; no half version")


def assert_versions_complete(registry) -> None:
    store = registry.store("default")
    for v in registry.versions("default"):
        assert store.is_complete(v.version), f"version {v.version} recorded without complete files"


@pytest.mark.parametrize("point", ["promotion_before_switch", "promotion_after_switch"])
def test_a_promotion_killed_at_the_switch_leaves_one_champion(tmp_path, kafka_bootstrap, point, fault_row):
    runner = LifecycleRunner(tmp_path, kafka_bootstrap)
    paths = week_files(tmp_path / "landing", 1)
    for day in (paths[0:1], paths[1:2]):
        runner.ingest(day)
        runner.train()
    command = [sys.executable, "-m", "include", "models", "promote", "--model-name", "default", "--version", "2",
               "--reason", "by hand", "--actor", "tester"]
    killed = subprocess.run(command, env=process_env(runner.env, point), cwd=PROJECT, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    registry = runner.registry()
    assert_no_half_state(registry)
    assert registry.champion_version("default") == (1 if point == "promotion_before_switch" else 2)
    again = subprocess.run(command, env=process_env(runner.env), cwd=PROJECT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert registry.champion_version("default") == 2 and registry.get("default", 1).status == "retired"
    with registry.sessions() as s:
        promoted = s.scalars(select(db.ModelEvent).where(db.ModelEvent.action == "promoted",
                                                         db.ModelEvent.version == 2)).all()
    assert len(promoted) == 1 and promoted[0].actor == "tester"
    assert_no_half_state(registry)
    fault_row(f"promotion SIGKILL ({point}), retried", runs=2, produced=None, in_topic=None,
              note="one champion, the pointer names it, one promotion event")
