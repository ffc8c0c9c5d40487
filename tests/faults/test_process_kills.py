"""SIGKILL of the ingest and of the trainer at each of their step boundaries, then a restart.

The processes are the real CLIs, killed by the production fault points (``RETRAIN_FAULT_POINT``): nothing
runs after the kill, exactly as when the machine dies there.
"""

from __future__ import annotations

import json

import pytest

from include.ingest.interval import ingest_files

from include.ingest.markers import control_topic
from tests.faults.helpers import (
    BATCH,
    check_history,
    check_topic,
    check_training,
    drone_rows,
    durable_state,
    env_for,
    ingest_cli,
    ledger,
    settings_for,
    trainer_args,
    write_csv,
)
from tests.support import TrainerProcess, end_offset, read_topic

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_ingest_sigkill_mid_file_before_and_after_the_kafka_commit_then_retry(tmp_path, kafka_bootstrap, topic,
                                                                              fault_row):
    """A compact version of tests/integration/test_ingest.py's crash test: each run is killed one stage later."""
    big, second, third = drone_rows(70_000), drone_rows(300, start=70_000), drone_rows(300, start=70_300)
    files = [write_csv(tmp_path / "landing" / f"observations_2026-01-{5 + i:02d}.csv", rows)
             for i, rows in enumerate((big, second, third))]
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    # (fault, rows a read_committed consumer sees after the kill)
    steps = [
        ("ingest_mid_file:1", 0),  # killed inside the first file's open transaction
        ("ingest_before_commit:2", len(big)),  # first file committed, second killed just before its commit
        ("ingest_after_commit:2", len(big) + len(second) + len(third)),  # third in Kafka, not in the ledger
    ]
    for fault, visible in steps:
        killed = ingest_cli(env, files, fault=fault)
        assert killed.returncode == -9, f"{fault} not reached:\n{killed.stderr[-3000:]}"
        assert len(read_topic(kafka_bootstrap, topic)) == visible, fault
    retried = ingest_cli(env, files)
    assert retried.returncode == 0, retried.stderr[-3000:]
    statuses = [f["status"] for f in json.loads(retried.stdout)["files"]]
    assert statuses == ["skipped", "skipped", "recovered"]
    again = ingest_cli(env, files)
    assert [f["status"] for f in json.loads(again.stdout)["files"]] == ["skipped"] * 3
    check = check_topic(kafka_bootstrap, topic, big + second + third)
    fault_row("ingest SIGKILL mid-file, before and after the Kafka commit; retry", runs=5,
              produced=len(big) + len(second) + len(third), in_topic=check.in_topic, duplicates=check.duplicates,
              losses=check.losses + check.unexpected,
              note="killed at " + ", ".join(f for f, _ in steps) + "; the retry recovered the last file from its "
                   "commit marker")
    assert check.exact, check
    assert len(read_topic(kafka_bootstrap, control_topic(topic))) == 3  # one commit marker per file
    assert ledger(env) == {str(f): ("committed", len(r)) for f, r in zip(files, (big, second, third))}


# Each restart is itself killed at the next boundary, so one chain crosses every boundary once and every run but
# the first also recovers its predecessor's crash. A checkpoint follows every 2 mini-batches (trainer_args), so
# ":2" is the second time in a run, after one durable checkpoint.
CHAIN = [
    ("train_after_step:2", "after a train step"),
    ("after_temp_write:2", "after the checkpoint temp file"),
    ("after_rename:2", "after the checkpoint rename"),
    ("train_after_checkpoint:1", "after the checkpoint, before history"),
    ("train_after_history:1", "after the history write, before the offset commit"),
    ("train_after_commit:1", "after the offset commit"),
]


def test_trainer_sigkill_at_every_step_boundary_then_restart(tmp_path, kafka_bootstrap, topic, fault_row):
    rows = drone_rows(20 * BATCH)
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_for(env)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings)
    data = check_topic(kafka_bootstrap, topic, rows)
    assert data.exact
    trainer = TrainerProcess(env)
    temp_files_seen = False
    for fault, label in CHAIN:
        rc, _summary, err = trainer.run(*trainer_args(), fault=fault)
        assert rc == -9, f"{fault} was not reached (rc {rc}):\n{err[-3000:]}"
        temp_files_seen |= any(p.name.endswith(".tmp") for p in (settings.checkpoint_dir / "default").iterdir())
        state = durable_state(env, data.offsets[0])
        fault_row(f"trainer SIGKILL {label}", runs=1, produced=len(rows), in_topic=data.in_topic,
                  trained=state.partial.trained, duplicates=state.partial.duplicates, losses=state.partial.losses,
                  note=f"{fault}; at the kill: {state}")
        assert not state.problems, (fault, state.problems)
    assert temp_files_seen, "the after_temp_write kill left no temp file behind"
    summary = trainer.ok(*trainer_args())
    # Read to the end: the next offset is past the last record and the commit marker that closes its file.
    end = end_offset(kafka_bootstrap, topic)
    assert end > data.offsets[0][-1] + 1 and summary["offsets_to"] == {"0": end}
    final = check_training(settings.db_url, data.offsets)
    fault_row("trainer restart after the six kills above", runs=trainer.runs, produced=len(rows),
              in_topic=data.in_topic, trained=final.trained, duplicates=final.duplicates, losses=final.losses)
    assert final.exact and final.rows == 20 and final.n_sum == len(rows), final
    check_history(env)
    assert not any(p.name.endswith(".tmp") for p in (settings.checkpoint_dir / "default").iterdir())
