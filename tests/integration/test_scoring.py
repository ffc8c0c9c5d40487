"""Streaming scoring against the real broker and registry: every request answered once, as the model says."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from include.schema import load_schema
from include.serving.answers import predictions_topic
from include.serving.model import LoadedModel
from include.serving.requests import decode_requests
from include.serving.stream import ScoreOptions, score_requests
from tests.scoring import (
    mixed_requests,
    produce_requests,
    promote,
    read_answers,
    register,
    request_offsets,
    scoring_env,
    settings_of,
)
from tests.support import clients_for

pytestmark = pytest.mark.integration


def test_round_trip_answers_every_request_once_as_the_model_predicts(tmp_path, kafka_bootstrap, topic):
    settings = settings_of(scoring_env(tmp_path / "state", kafka_bootstrap, topic))
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic, partitions=2)
    values = mixed_requests(600)
    produce_requests(kafka_bootstrap, settings.requests_topic, values)
    info = register(settings, seed=1)

    summary = score_requests(settings, ScoreOptions(batch_messages=128))
    requests = request_offsets(kafka_bootstrap, settings.requests_topic)
    assert len(requests) == 600
    answers = read_answers(kafka_bootstrap, predictions_topic(settings.requests_topic))
    assert summary.stop_reason == "end_offsets" and summary.records == 600 and summary.versions == {"1": 600}
    assert set(answers.by_request) == set(requests) and answers.duplicates == 0
    assert summary.refused == 60 and summary.scored == 540 and summary.transactions >= 3

    # Each answer is what the version's model says about that request, decided by the one value parser.
    where = sorted(requests)
    decoded = decode_requests(load_schema("drone"), [requests[w][1] for w in where])
    expected = LoadedModel(info.keras_path, info.version).predict(decoded.x)
    for j, i in enumerate(decoded.good):
        answer = answers.by_request[where[i]][0]
        assert answer["topic"] == settings.requests_topic and answer["version"] == 1 and answer["model"] == "default"
        assert answer["probability"] == pytest.approx(expected[j], abs=1e-6)
        assert answer["label"] == int(answer["probability"] >= 0.5)
        label = decoded.labels[j]
        assert answer["observed_label"] == (None if math.isnan(label) else int(label))
        assert answers.keys[where[i]] == requests[where[i]][0]  # keyed like the request
        assert answers.placed[where[i]] == where[i][0] == answer["partition"]  # in the request's partition
    assert sum(a[0]["observed_label"] is None for a in answers.by_request.values() if "error" not in a[0]) == 180
    for i, reason in decoded.errors:
        assert answers.by_request[where[i]][0]["error"] == reason and "probability" not in answers.by_request[where[i]][0]
    assert {"bakery" in r for _, r in decoded.errors} == {True, False}

    # A second run has nothing new: the offsets moved with the transactions.
    again = score_requests(settings, ScoreOptions())
    assert again.stop_reason == "nothing_new" and again.records == 0
    assert read_answers(kafka_bootstrap, predictions_topic(settings.requests_topic)).total == 600


def test_no_requests_topic_is_nothing_to_do_and_no_champion_is_a_clear_error(tmp_path, kafka_bootstrap, topic):
    from include.lifecycle.registry import LifecycleError

    settings = settings_of(scoring_env(tmp_path / "state", kafka_bootstrap, topic))
    assert score_requests(settings).stop_reason == "no_requests_topic"
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(10))
    with pytest.raises(LifecycleError, match="no champion yet"):
        score_requests(settings)
    register(settings, seed=1)
    assert score_requests(settings).records == 10  # nothing was lost to the failed run


def _wait_for_answers(bootstrap: str, topic: str, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_answers(bootstrap, topic).total >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{topic}: fewer than {count} answers after {timeout}s")


def test_a_promotion_mid_stream_takes_effect_at_the_next_transaction(tmp_path, kafka_bootstrap, topic):
    settings = settings_of(scoring_env(tmp_path / "state", kafka_bootstrap, topic))
    out = predictions_topic(settings.requests_topic)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic)
    first, second = register(settings, seed=1), register(settings, seed=2)
    assert (first.status, second.status) == ("champion", "candidate")
    stop = threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.update(summary=score_requests(
        settings, ScoreOptions(follow=True, batch_messages=50), stop=stop)))
    worker.start()
    try:
        produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(200), key_prefix="a")
        _wait_for_answers(kafka_bootstrap, out, 200)
        promote(settings, second.version)
        produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(300, start=200), key_prefix="b")
        _wait_for_answers(kafka_bootstrap, out, 500)
    finally:
        stop.set()
        worker.join(60)
    summary = result["summary"]
    assert summary.stop_reason == "stopped" and summary.versions == {"1": 200, "2": 300}
    answers = read_answers(kafka_bootstrap, out)
    assert answers.duplicates == 0 and len(answers.by_request) == 500
    by_version = {where[1]: a[0]["version"] for where, a in answers.by_request.items()}
    assert {by_version[o] for o in range(200)} == {1} and {by_version[o] for o in range(200, 500)} == {2}


def test_the_dag_scores_once_with_airflow_dags_test(tmp_path, airflow_home, kafka_bootstrap, topic):
    from tests.support import airflow_env, run_airflow

    env = scoring_env(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_of(env)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(300))
    register(settings, seed=3)
    result = run_airflow(airflow_env(airflow_home, kafka_bootstrap, env), "dags", "test", "score_requests",
                         "2026-01-07")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-6000:]
    assert "scorer stopped (end_offsets): 300 requests, 30 refused" in output, output[-6000:]
    answers = read_answers(kafka_bootstrap, predictions_topic(settings.requests_topic))
    assert len(answers.by_request) == 300 and answers.duplicates == 0 and answers.versions() == {1: 300}


def test_the_command_line_prints_the_summary_and_says_what_is_missing(tmp_path, kafka_bootstrap, topic):
    from tests.scoring import score_cli

    env = scoring_env(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_of(env)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(40))
    refused = score_cli(env)
    out, err = refused.communicate(timeout=300)
    assert refused.returncode == 6 and "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1] == ("error: model 'default' has no champion yet: train it first (`python -m "
                                            "include train`, or the train_model DAG), or pass a version"), err[-3000:]
    register(settings, seed=1)
    proc = score_cli(env, "--max-records", "25")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert (summary["records"], summary["stop_reason"], summary["versions"]) == (25, "max_records", {"1": 25})
    assert summary["offsets_to"] == {"0": 25} and summary["records_per_s"] > 0


def _kafka_error(**flags):
    from confluent_kafka import KafkaError, KafkaException

    return KafkaException(KafkaError(KafkaError._STATE, "injected by the test", **flags))


def test_an_abortable_error_aborts_rewinds_and_scores_again_and_a_fatal_one_ends_the_run(tmp_path, kafka_bootstrap,
                                                                                          topic):
    from tests.faults.helpers import stage_hooks

    settings = settings_of(scoring_env(tmp_path / "state", kafka_bootstrap, topic))
    out = predictions_topic(settings.requests_topic)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic, partitions=2)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(1000))
    register(settings, seed=1)

    def abortable(n: int) -> None:
        if n == 2:  # the second transaction: its answers and offsets are sent, not committed
            time.sleep(1.0)  # past linger.ms: the answers reach the log before the abort
            raise _kafka_error(txn_requires_abort=True)

    with stage_hooks({"scorer_before_commit": abortable}):
        summary = score_requests(settings, ScoreOptions(batch_messages=150, max_records=600))
    assert summary.aborted == 1 and summary.records == 600 and summary.stop_reason == "max_records"
    answers = read_answers(kafka_bootstrap, out)
    assert len(answers.by_request) == 600 and answers.duplicates == 0
    assert read_answers(kafka_bootstrap, out, committed_only=False).total > 600  # the aborted answers are in the log

    def fatal(n: int) -> None:
        raise _kafka_error(fatal=True)

    with stage_hooks({"scorer_after_produce": fatal}), pytest.raises(Exception, match="injected by the test"):
        score_requests(settings, ScoreOptions(batch_messages=150))
    rest = score_requests(settings, ScoreOptions(batch_messages=150))
    assert rest.records == 400 and rest.stop_reason == "end_offsets"
    answers = read_answers(kafka_bootstrap, out)
    assert len(answers.by_request) == 1000 and answers.duplicates == 0 and answers.total == 1000


def test_scorers_on_disjoint_partitions_each_answer_their_own(tmp_path, kafka_bootstrap, topic):
    from include.kafka.reader import OffsetError

    settings = settings_of(scoring_env(tmp_path / "state", kafka_bootstrap, topic))
    out = predictions_topic(settings.requests_topic)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic, partitions=2)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(400))
    register(settings, seed=1)
    requests = request_offsets(kafka_bootstrap, settings.requests_topic)
    first = score_requests(settings, ScoreOptions(partitions=(1,)))
    assert first.transactional_id.endswith(".p1") and set(first.offsets_to) == {"1"}
    assert {p for p, _ in read_answers(kafka_bootstrap, out).by_request} == {1}
    second = score_requests(settings, ScoreOptions(partitions=(0,)))
    assert second.transactional_id.endswith(".p0") and first.records + second.records == 400
    answers = read_answers(kafka_bootstrap, out)
    assert set(answers.by_request) == set(requests) and answers.duplicates == 0
    with pytest.raises(OffsetError, match=r"has no partition\(s\) \[2\]"):
        score_requests(settings, ScoreOptions(partitions=(0, 2)))
