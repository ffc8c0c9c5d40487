"""Generated training history for the monitoring tests: runs, mini-batch metrics, drift, baseline, ledger.

Rows are written with the include.history.db models into a real (SQLite) history database, shaped like the
trainer's: ``seq`` counts records seen before each mini-batch, one ``training_runs`` row per DAG run, a
batch-baseline run, drift events, and ingest-ledger files whose CSVs have ``.meta.json`` sidecars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from include.history import db

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
EVENT_T0_MS = int(T0.timestamp() * 1000)


@dataclass
class History:
    url: str
    model_name: str
    dag_id: str
    runs: list[dict] = field(default_factory=list)  # run_id, dag_run_id, batches, seq_from, seq_to
    batches: int = 0
    drift_seqs: list[int] = field(default_factory=list)
    baseline_accuracy: float | None = None
    bayes_accuracy: float | None = None
    files: list[Path] = field(default_factory=list)


def write_history(
    url: str,
    *,
    run_batches: tuple[int, ...] = (400, 500, 600),
    batch_size: int = 100,
    model_name: str = "default",
    dag_id: str = "train_model",
    topic: str = "drone-observations",
    landing: Path | None = None,
    drift_every: int = 0,
    baseline: bool = True,
    seed: int = 3,
) -> History:
    """Write one model's history: ``len(run_batches)`` incremental runs (one per DAG run) of that many
    mini-batches, a batch baseline, drift events every ``drift_every`` batches, and (with ``landing``) one
    committed ledger file with a sidecar per run."""
    db.upgrade(url)
    engine = db.get_engine(url)
    rng = np.random.default_rng(seed)
    history = History(url=url, model_name=model_name, dag_id=dag_id)
    run_rows, metric_rows, drift_rows, checkpoint_rows, file_rows = [], [], [], [], []
    seq = 0
    for index, count in enumerate(run_batches):
        run_id = f"run{index:03d}" + "0" * 26
        dag_run_id = f"scheduled__2026-01-{5 + index:02d}T00:00:00+00:00"
        started = T0 + timedelta(days=index)
        seq_from = seq
        offsets_from = {"0": seq}
        for b in range(count):
            accuracy = 0.62 + 0.3 * (1 - np.exp(-seq / 40_000)) + rng.normal(0, 0.01)
            event_ms = EVENT_T0_MS + seq * 600  # 0.6 s of event time per record
            metric_rows.append({
                "model_name": model_name, "batch_key": f"p0:{seq}", "run_id": run_id, "kind": "incremental",
                "seq": seq, "batch_index": b, "offsets_from": {"0": seq}, "offsets_to": {"0": seq + batch_size},
                "n": batch_size, "n_train": batch_size, "n_eval": batch_size, "loss": float(1 - accuracy),
                "train_accuracy": float(accuracy), "window_accuracy": float(min(accuracy, 0.99)),
                "prequential_accuracy": float(min(accuracy - 0.02, 0.99)),
                "event_time_min": event_ms, "event_time_max": event_ms + (batch_size - 1) * 600, "created_at": started,
            })
            if drift_every and (history.batches + b) % drift_every == drift_every - 1:
                drift_rows.append({
                    "model_name": model_name, "batch_key": f"p0:{seq}", "run_id": run_id, "seq": seq,
                    "offsets": {"0": seq}, "event_time": event_ms, "detector": "adwin",
                    "accuracy_before": float(accuracy + 0.05), "accuracy_after": float(accuracy), "reaction": "none",
                })
                history.drift_seqs.append(seq)
            seq += batch_size
        history.batches += count
        checkpoint_id = f"ckpt{index:03d}" + "0" * 20
        checkpoint_rows.append({
            "checkpoint_id": checkpoint_id, "model_name": model_name, "run_id": run_id, "seq": seq,
            "path": f"/tmp/checkpoints/{checkpoint_id}", "offsets": {"0": seq}, "records_total": seq,
            "schema_id": "drone-v1", "created_at": started,
        })
        run_rows.append({
            "run_id": run_id, "kind": "incremental", "model_name": model_name, "dag_id": dag_id,
            "dag_run_id": dag_run_id, "topic": topic, "consumer_group": "drone-trainer", "status": "success",
            "stop_reason": "end_offsets", "offsets_from": offsets_from, "offsets_to": {"0": seq},
            "end_offsets_at_start": {"0": seq}, "records": seq - seq_from, "poison": 0, "batches": count,
            "checkpoint_id": checkpoint_id, "window_accuracy": metric_rows[-1]["window_accuracy"],
            "prequential_accuracy": metric_rows[-1]["prequential_accuracy"], "started_at": started,
            "ended_at": started + timedelta(seconds=20 + count / 10),
        })
        history.runs.append({"run_id": run_id, "dag_run_id": dag_run_id, "batches": count,
                             "seq_from": seq_from, "seq_to": seq - batch_size})
        if landing is not None:
            landing.mkdir(parents=True, exist_ok=True)
            day = (T0 + timedelta(days=index)).date()
            csv = landing / f"observations_{day.isoformat()}.csv"
            csv.write_text("header\n")
            rows = count * batch_size
            bayes = 0.93 - 0.01 * index
            (landing / f"observations_{day.isoformat()}.meta.json").write_text(
                json.dumps({"file": csv.name, "rows": rows, "bayes_accuracy": bayes}))
            history.files.append(csv)
            file_rows.append({
                "topic": topic, "content_sha256": f"{index:064d}", "file_name": str(csv), "file_date": day.isoformat(),
                "size_bytes": 1000 + index, "schema_id": "drone-v1", "status": "committed", "rows_valid": rows,
                "rows_bad": index, "offsets": {"0": [seq_from, seq - 1]}, "transactional_id": f"tx-{index}",
                "attempts": 1, "dag_run_id": dag_run_id, "created_at": started, "updated_at": started,
            })
    if landing is not None:
        total = sum(r["rows_valid"] for r in file_rows)
        history.bayes_accuracy = round(
            sum(r["rows_valid"] * (0.93 - 0.01 * i) for i, r in enumerate(file_rows)) / total, 6)
    if baseline:
        history.baseline_accuracy = 0.905
        run_rows.append({
            "run_id": "baseline" + "0" * 24, "kind": "batch_baseline", "model_name": model_name, "dag_id": dag_id,
            "dag_run_id": "manual__baseline", "topic": topic, "consumer_group": "drone-baseline",
            "status": "success", "stop_reason": "end_offsets", "offsets_from": {"0": 0}, "offsets_to": {"0": seq},
            "end_offsets_at_start": {"0": seq}, "records": seq, "poison": 0, "batches": 10, "checkpoint_id": None,
            "window_accuracy": history.baseline_accuracy, "prequential_accuracy": None,
            "started_at": T0 - timedelta(days=1), "ended_at": T0 - timedelta(days=1) + timedelta(minutes=3),
        })
        metric_rows.extend({
            "model_name": model_name, "batch_key": f"baseline:{i}", "run_id": "baseline" + "0" * 24,
            "kind": "batch_baseline", "seq": i * 1000, "batch_index": i, "offsets_from": {}, "offsets_to": {},
            "n": 1000, "n_train": 1000, "n_eval": 1000, "loss": 0.2, "train_accuracy": 0.91, "window_accuracy": 0.905,
            "prequential_accuracy": 0.9, "event_time_min": None, "event_time_max": None, "created_at": T0,
        } for i in range(10))
    with engine.begin() as connection:
        connection.execute(insert(db.TrainingRun), run_rows)
        for i in range(0, len(metric_rows), 20_000):
            connection.execute(insert(db.BatchMetric), metric_rows[i:i + 20_000])
        if drift_rows:
            connection.execute(insert(db.DriftEvent), drift_rows)
        connection.execute(insert(db.CheckpointRecord), checkpoint_rows)
        if file_rows:
            connection.execute(insert(db.IngestedFile), file_rows)
            connection.execute(insert(db.QuarantinedRow), [
                {"topic": topic, "content_sha256": f"{i:064d}", "file_name": file_rows[i]["file_name"], "line": 10 + j,
                 "field": "speed", "reason": "not a number", "raw": "x,y,z"}
                for i in range(len(file_rows)) for j in range(i)
            ])
    return history
