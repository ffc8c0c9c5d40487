"""
### Ingest drone-delivery observations into Kafka

Every day (by default) this DAG takes the CSV files that landed for its **data interval** (a file's date is
in its name, `observations_YYYY-MM-DD.csv`) from the landing folder (`RETRAIN_LANDING_DIR`, a local path or
an object-storage URL) and produces each valid row **exactly once** into the observations topic:

* one Kafka transaction per file, with a commit marker, and a ledger of ingested files (content hash, rows,
  offsets) in the project database: retries, reruns and overlapping backfills produce nothing twice;
* bad rows go to the dead-letter topic and the `quarantined_rows` table with file, line, field and reason;
  a file over the bad-row threshold (`RETRAIN_MAX_BAD_FRACTION`, 1%) or with a wrong header fails the run
  and produces nothing;
* on success the topic's Asset (`kafka://<broker>/<topic>`) gets an event (rows, offsets), which schedules training;
* a file **older than the newest ingested data** is not an error: it is recorded in the ledger as
  `waiting_for_rebuild` (the live topic and model are untouched, the task log says so in one line) and a rebuild is
  requested; `wake_rebuild` then updates the rebuild Asset (`retrain://rebuild/<topic>`), which runs
  `rebuild_model` (also when a rebuild is running, so it follows the new files).

Files go to the topic's **live generation** (`<topic>` until a rebuild switched to `<topic>.gN`), and new files also
to the generations that follow it (a running rebuild's, the standby ones kept for switching back).

A manual run has no data interval: it considers every dated file and the ledger skips those already in.
Kafka settings come from the `kafka_default` connection.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from include.assets import observations_asset, rebuild_asset

OBSERVATIONS = observations_asset()
REBUILD = rebuild_asset()


@dag(
    # Data intervals (not Airflow 3's default trigger timetable, whose runs have empty intervals).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # intervals go into the topic in time order
    doc_md=__doc__,
    tags=["retrain", "ingest", "kafka"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
)
def ingest_observations():
    @task(outlets=[OBSERVATIONS])
    def ingest(data_interval_start=None, data_interval_end=None, run_id=None, outlet_events=None) -> dict:
        """Ingest the files that landed in this run's data interval."""
        from include.ingest.interval import ingest_interval

        result = ingest_interval(data_interval_start, data_interval_end, dag_run_id=run_id).as_dict()
        outlet_events[OBSERVATIONS].extra = {
            "rows": result["rows_new"],
            "files": result["files_new"],
            "offsets": [f["offsets"] for f in result["files"] if f["status"] in ("committed", "recovered")],
            "interval": result["interval"],
        }
        return result

    @task.short_circuit
    def rebuild_wanted(result: dict) -> bool:
        """Whether rebuild_model has work: files that wait for a rebuild, or a running rebuild to follow."""
        return bool(result["files_waiting"]) or result["rebuild"] is not None

    @task(outlets=[REBUILD])
    def wake_rebuild(result: dict, outlet_events=None) -> dict:
        """Update the rebuild Asset: rebuild_model runs (the request itself is in the database already)."""
        outlet_events[REBUILD].extra = {"rebuild": result["rebuild"], "files_waiting": result["files_waiting"]}
        return result["rebuild"]

    result = ingest()
    rebuild_wanted(result) >> wake_rebuild(result)


ingest_observations()
