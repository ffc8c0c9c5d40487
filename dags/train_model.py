"""
### Train the busy/not-busy model incrementally from Kafka

A **bounded** training task: it resumes from the newest valid model checkpoint and the Kafka offsets it
last trained up to, reads the observations topic in mini-batches of 100 (80% trained, 20% held out in a
window of the latest 1,000 rows), and stops at the end offsets it saw at start, a consumer timeout
(`RETRAIN_STREAM_TIMEOUT_S`), or a record/time limit (DAG params). Progress (records, records/s, window
accuracy) is logged every few seconds; accuracy history goes to the project database
(`training_runs`, `batch_metrics`, `checkpoints`), shown on the **Model accuracy** page.

Params: `checkpoint_every_s` (60: how often progress is made durable, so how much a killed run's retry trains
again at most), `mode` (`replay`, which learns from a bounded buffer of recent rows, or `single_pass`, the blog's loop;
empty keeps the model's own mode, and a new model gets `replay`), `drift` (what to do when drift is detected: `none`, `shrink`, `retrain`)
and `drift_detector` (`ewma`, the default, or `page_hinkley`). Detected drifts are recorded in `drift_events`,
and so is a `recall`: with a reaction, the model from before each drift is kept, and taken up again when its rule
returns.

After training, the **promotion gate** (`evaluate`, a branch) judges the previous run's candidate version against
the champion on the rows this run held out (forward evaluation; README "The model lifecycle"), then `promote` or
`reject` records the decision (who: `gate`, why, both accuracies). Training itself always continues from the
newest checkpoint, whatever the gate says: only what is served is gated.

It trains the model's lineage in the topic's **live generation**: `<model>` on `<topic>` until a rebuild
(`rebuild_model`) switched to `<model>.gN` on `<topic>.gN`.

Triggered by new data (the observations topic's Asset, `kafka://<broker>/<topic>`, that the ingest DAG updates) and daily, so it can
also be backfilled. Only one run at a time (`max_active_runs=1` and a trainer lock); a rerun trains only
offsets it has not trained. Kafka settings come from the `kafka_default` connection.

**Alerts** (`notify`, which runs whatever the steps before it decided): a drift detected by this run, its window
accuracy under `RETRAIN_ACCURACY_FLOOR` and a rejected candidate are recorded once each and sent, as one digest,
to this DAG's `ALERT_NOTIFIERS` (by default an e-mail through the `smtp_default` connection to
`RETRAIN_ALERT_EMAIL_TO`); a failed send fails the task, and the retry sends what is still pending.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, dag, task

from include.assets import observations_asset
from include.lifecycle.notifiers import EmailDigestNotifier
from include.training.options import DEFAULT_DETECTOR, DEFAULT_DRIFT_REACTION, DETECTORS, DRIFT_REACTIONS

#: Who hears about this DAG's alerts: Airflow notifiers (any BaseNotifier), each given the digest as
#: ``alert_digest`` in its context. Recipients and SMTP connection default to RETRAIN_ALERT_EMAIL_TO and
#: RETRAIN_SMTP_CONN_ID; e.g. ``[EmailDigestNotifier(to="ml-team@example.com")]``, or ``[]`` for none.
ALERT_NOTIFIERS = [EmailDigestNotifier()]


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("@daily", timezone="UTC"), assets=[observations_asset()]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retrain", "training", "kafka"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "mode": Param(None, type=["null", "string"], enum=[None, "replay", "single_pass"],
                      description="replay: learns from a buffer of recent rows; single_pass: the blog's loop. "
                                  "Empty: the model's own mode (replay for a new model)"),
        "reader": Param("confluent", enum=["confluent", "tfio"]),
        "max_records": Param(None, type=["null", "integer"], minimum=1),
        "max_seconds": Param(None, type=["null", "number"], minimum=1),
        "checkpoint_every_s": Param(60, type="number", minimum=0,
                                    description="make progress durable (checkpoint, history, offsets) at least this "
                                                "often; a retry resumes from there"),
        "model_name": Param("default", type="string", pattern="^[A-Za-z0-9_.-]{1,64}$"),
        "drift": Param(DEFAULT_DRIFT_REACTION, enum=list(DRIFT_REACTIONS),
                       description="reaction to a detected drift (detection always runs and is recorded)"),
        "drift_detector": Param(DEFAULT_DETECTOR, enum=list(DETECTORS),
                                description="what watches the prequential error for drift"),
    },
)
def train_model():
    @task
    def train(params=None, dag_run=None) -> dict:
        """Train on what is new in the live generation's topic since the last checkpoint of the model's lineage."""
        from include.lifecycle.generations import live_training
        from include.settings import get_settings
        from include.training.trainer import TrainOptions, train

        settings, lineage = live_training(get_settings(), params["model_name"])
        options = TrainOptions(
            model_name=lineage, mode=params["mode"], reader=params["reader"],
            max_records=params["max_records"], max_seconds=params["max_seconds"], drift=params["drift"],
            drift_detector=params["drift_detector"], checkpoint_every_s=params["checkpoint_every_s"],
        )
        summary = train(settings, options, use_airflow=True, dag_id=dag_run.dag_id, dag_run_id=dag_run.run_id)
        return {**summary.as_dict(), "lineage": lineage, "topic": settings.topic}

    @task.branch
    def evaluate(trained: dict) -> str | None:
        """The promotion gate: which of promote / reject follows (none when there is nothing to decide)."""
        from include.lifecycle.steps import evaluate_step

        return evaluate_step(trained["lineage"])

    @task
    def promote(trained: dict) -> dict | None:
        """Serve the candidate the gate accepted (recorded with the gate's numbers)."""
        from include.lifecycle.steps import decision_step

        return decision_step(trained["lineage"], "promote")

    @task
    def reject(trained: dict) -> dict | None:
        """Mark the candidate the gate refused, and record the alert."""
        from include.lifecycle.steps import decision_step

        return decision_step(trained["lineage"], "reject")

    # After whichever of promote / reject ran, or neither (nothing to decide), but not after a failure.
    @task(trigger_rule="none_failed")
    def notify(trained: dict, params=None, dag_run=None, **context) -> dict:
        """Record this run's drift and accuracy-floor alerts, then send every pending alert as one digest."""
        from include.lifecycle.alerts import notify_dag_run

        return notify_dag_run(trained["lineage"], dag_run.dag_id, dag_run.run_id, ALERT_NOTIFIERS,
                              context={**context, "params": params, "dag_run": dag_run})

    trained = train()
    evaluate(trained) >> [promote(trained), reject(trained)] >> notify(trained)


train_model()
