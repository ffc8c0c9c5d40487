"""
### Batch baseline: a fresh model trained on the whole topic

Reads the observations topic from its earliest offset up to the end offsets it sees at start (at most
`max_records` records), trains a **fresh** model on it for several epochs, and measures its accuracy on rows
held out the way the incremental trainer holds them out (the last 20% of every mini-batch of 100). The run is
recorded in `training_runs` with `kind = batch_baseline` and its held-out accuracy, which the **Model accuracy**
page draws as a line beside the incremental curve of the model named `model_name`.

Manual only (trigger it when you want the comparison). It never moves the trainer's consumer-group offsets,
never dead-letters, and never touches the incremental model's checkpoints. Kafka settings come from the
`kafka_default` connection.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retrain", "training", "baseline", "kafka"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("default", type="string", pattern="^[A-Za-z0-9_.-]{1,64}$",
                            description="the incremental model this baseline is drawn beside"),
        "max_records": Param(1_000_000, type="integer", minimum=1, description="read at most this many records"),
        "epochs": Param(20, type="integer", minimum=1, maximum=1000),
    },
)
def train_baseline():
    @task
    def baseline(params=None, dag_run=None) -> dict:
        """Train a fresh model on the topic and record its held-out accuracy."""
        from include.training.baseline import train_baseline

        return train_baseline(model_name=params["model_name"], max_records=params["max_records"],
                              epochs=params["epochs"], use_airflow=True, dag_id=dag_run.dag_id,
                              dag_run_id=dag_run.run_id)

    baseline()


train_baseline()
