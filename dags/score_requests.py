"""
### Score the requests topic into `<requests topic>.predictions`, exactly once

A **bounded** streaming-scoring task: it reads the requests topic (`RETRAIN_REQUESTS_TOPIC`, default
`<topic>.requests`; each message one CSV row in the schema's order, the label optional) from the scorer group's
committed offsets up to the end offsets it sees at start, scores each poll batch with the model's **champion**
(or the `version` param), and writes one JSON answer per request, keyed like the request, to
`<requests topic>.predictions`: the request's topic/partition/offset, the version, the probability and the
label, or the reason a request was refused.

Each batch is one Kafka transaction that carries the answers and the consumed offsets
(`send_offsets_to_transaction`), so a killed or retried task never loses or duplicates an answer: an interrupted
transaction is aborted by the next run, which starts again at the committed offsets. A promotion or rollback takes
effect at the next transaction. It also stops after `RETRAIN_STREAM_TIMEOUT_S` without a request or at the
`max_records` / `max_seconds` params.

Every 5 minutes, one run at a time (`max_active_runs=1`; a second scorer with the same transactional id would
fence the first). Kafka settings come from the `kafka_default` connection.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task


@dag(
    doc_md=__doc__,
    tags=["retrain", "serving", "kafka"],
    # Every 5 minutes, one run at a time: a second scorer with the same transactional id would fence the first.
    schedule=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
    max_active_runs=1,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("default", type="string", pattern="^[A-Za-z0-9_.-]{1,64}$"),
        "version": Param(None, type=["null", "integer"], minimum=1, description="a fixed version (default: the champion)"),
        "max_records": Param(None, type=["null", "integer"], minimum=1),
        "max_seconds": Param(240, type=["null", "number"], minimum=1,
                             description="ends the run before the next one is due"),
    },
)
def score_requests():
    @task
    def score(params=None) -> dict:
        """Answer the requests that arrived since the last run."""
        from include.serving.stream import ScoreOptions, score_requests

        options = ScoreOptions(model_name=params["model_name"], version=params["version"],
                               max_records=params["max_records"], max_seconds=params["max_seconds"])
        return score_requests(options=options, use_airflow=True).as_dict()

    score()


score_requests()
