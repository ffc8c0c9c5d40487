"""
### Rebuild the model on the full, ordered history; switch when it is at least as good

When a file **older than the newest ingested data** lands (the ingest DAG records it as `waiting_for_rebuild` and
updates the rebuild Asset, `retrain://rebuild/<topic>`), or when someone triggers this DAG with a `reason`, a
**rebuild** builds the topic's next **generation** in the background while the live one keeps serving:

1. `start`: start the rebuild, or join the one already running (one at a time per topic; a second request joins);
   with nothing requested or running the run ends here.
2. `fill`: a new topic `<topic>.gN` gets every file the ledger knows plus the waiting ones, **in date order,
   exactly once** (one Kafka transaction per file, the ledger keyed by generation). From then on, new live files go
   to both generations.
3. `train`: a new model lineage `<model>.gN`, trained **from scratch in bounded runs** (`RETRAIN_REBUILD_RUN_RECORDS`
   records each: checkpoints, history and versions as `train_model`'s, so a killed run resumes and trains nothing
   twice), up to the live lineage's end and never past it.
4. `decide` (a sensor: it looks again every minute while the gate waits): the rebuild's version at the live
   candidate's point and the **live champion** score the live lineage's newest held-out rows with the promotion
   gate's rule. Pass: **one atomic switch** (ingest, training and serving follow the new generation; the old one is
   kept for switching back: `python -m include generations switch`). Fail: the decision and reason are recorded and
   shown, an alert is raised, and the live pipeline goes on unchanged.
5. `notify`: pending alerts as one digest (as `train_model` sends them).

Params: `reason` (a manual run with a reason requests a rebuild), `model_name` (the model it rebuilds), `mode`
(the learner mode of the new lineage; empty: `replay`). Progress, the generations and the switch are on the
**Model accuracy** page. Kafka settings come from the `kafka_default` connection.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, task

from include.assets import rebuild_asset
from include.lifecycle.notifiers import EmailDigestNotifier

#: Who hears about a rejected rebuild (as in train_model.py): Airflow notifiers given the digest as ``alert_digest``.
ALERT_NOTIFIERS = [EmailDigestNotifier()]


@dag(
    # On rebuild requests, and daily, so a request made outside Airflow (the command line) is picked up too.
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("@daily", timezone="UTC"),
                                 assets=[rebuild_asset()]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retrain", "rebuild", "kafka"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "reason": Param(None, type=["null", "string"], maxLength=500,
                        description="why (a manual run with a reason requests a rebuild, or joins the running one)"),
        "model_name": Param(None, type=["null", "string"], pattern="^[A-Za-z0-9_.-]{1,64}$",
                            description="the model to rebuild (default RETRAIN_REBUILD_MODEL, 'default')"),
        "mode": Param(None, type=["null", "string"], enum=[None, "replay", "single_pass"],
                      description="learner mode of the new lineage (empty: replay)"),
    },
)
def rebuild_model():
    @task.short_circuit
    def start(params=None, dag_run=None):
        """Start or join a rebuild; nothing downstream runs when none is requested or running."""
        from include.rebuild.steps import start_step

        actor = f"{dag_run.run_type} run {dag_run.run_id}"
        info = start_step(reason=params["reason"], actor=actor, model_name=params["model_name"], use_airflow=True)
        return info["id"] if info else None

    @task
    def fill(rebuild_id: int, dag_run=None) -> dict:
        """Every file in date order into the new generation, exactly once."""
        from include.rebuild.steps import fill_step

        return fill_step(rebuild_id, use_airflow=True, dag_run_id=dag_run.run_id)

    @task
    def train(rebuild_id: int, params=None, dag_run=None) -> dict:
        """Bounded runs of the new lineage, from scratch, up to the live lineage's end."""
        from include.rebuild.steps import train_step

        return train_step(rebuild_id, use_airflow=True, dag_id=dag_run.dag_id, dag_run_id=dag_run.run_id,
                          mode=params["mode"])

    @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule", soft_fail=True)
    def decide(rebuild_id: int, params=None, dag_run=None):
        """Follow the live generation, then the gate: switch, reject, or look again (a rebuild left waiting at the
        timeout goes on at the next run)."""
        from airflow.sdk import PokeReturnValue

        from include.rebuild.steps import decide_step

        verdict = decide_step(rebuild_id, use_airflow=True, dag_id=dag_run.dag_id, dag_run_id=dag_run.run_id,
                              mode=params["mode"])
        return PokeReturnValue(is_done=verdict.decision != "wait", xcom_value=verdict.as_dict())

    @task(trigger_rule="none_failed")
    def notify(rebuild_id: int, dag_run=None, **context) -> dict:
        """Send the pending alerts (a rejected rebuild's among them) as one digest."""
        from include.rebuild.steps import notify_step

        return notify_step(rebuild_id, ALERT_NOTIFIERS, context={**context, "dag_run": dag_run})

    rebuild_id = start()
    decided = decide(rebuild_id)
    fill(rebuild_id) >> train(rebuild_id) >> decided >> notify(rebuild_id)


rebuild_model()
