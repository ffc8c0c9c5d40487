"""
### Stack check

Proves the stack this project runs on: the Kafka broker answers a metadata request through the
`kafka_default` connection, and a task can import TensorFlow and tensorflow-io and run a tiny Keras step.
Trigger it by hand after `make run`; it changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["retrain", "health"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
)
def stack_check():
    @task
    def check_kafka() -> dict:
        from include.stack import check_kafka

        return check_kafka()

    @task
    def check_tensorflow() -> dict:
        from include.stack import check_tensorflow

        return check_tensorflow()

    check_kafka() >> check_tensorflow()


stack_check()
