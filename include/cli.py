"""The command line: ``python -m include <command>``.

Each command is a few lines that read options, build the settings and call one function of a stage package; the
work and its rules live there. Results go to stdout (JSON where a program may read them), logs to stderr. A
failure the user can act on is one line on stderr, ``error: ...``, and a non-zero exit code; ``--debug`` shows the
traceback as well. Heavy imports (TensorFlow, Kafka, SQLAlchemy) happen inside the commands, so ``--help`` is
instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from include.training.options import DEFAULT_DETECTOR, DEFAULT_DRIFT_REACTION, DETECTORS, DRIFT_REACTIONS, TrainOptions

app = typer.Typer(
    name="python -m include",
    help="Streaming model retraining on Airflow: ingest CSV into Kafka, train incrementally, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _choices(name: str, *values: str) -> type[Enum]:
    """An option's allowed values, as the ``str`` Enum Typer shows in ``--help`` and checks."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


Mode = _choices("Mode", "replay", "single_pass")
Reader = _choices("Reader", "confluent", "tfio")
DriftReaction = _choices("DriftReaction", *DRIFT_REACTIONS)
DriftDetector = _choices("DriftDetector", *DETECTORS)
XAxis = _choices("XAxis", "records", "event_time")
DemoStep = _choices("DemoStep", "prepare", "wait", "table", "scoring", "older")
OutputFormat = _choices("OutputFormat", "csv", "jsonl")


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request is noise here


# Errors a user can act on, with the exit code each gives. Anything else is unexpected (exit 70).
def _known_errors() -> dict[type[BaseException], int]:
    from confluent_kafka import KafkaException
    from sqlalchemy.exc import SQLAlchemyError

    from include.history.db import HistoryNotReady
    from include.ingest.errors import IngestError
    from include.ingest.validate import HeaderError
    from include.kafka.clients import KafkaConfigError
    from include.kafka.reader import OffsetError
    from include.lifecycle.registry import LifecycleError
    from include.schema import SchemaError
    from include.serving.predict import PredictInputError
    from include.settings import SettingsError
    from include.training.trainer import TrainerBusy

    return {SettingsError: 2, SchemaError: 2, KafkaConfigError: 2, FileNotFoundError: 2, IngestError: 1,
            TrainerBusy: 3, OffsetError: 4, KafkaException: 5, SQLAlchemyError: 5, LifecycleError: 6,
            HistoryNotReady: 2, PredictInputError: 2, HeaderError: 2}


def _run(work: Callable[[], Any]) -> Any:
    """Run a command's work; known failures become one ``error:`` line and their exit code."""
    try:
        return work()
    except (typer.Exit, typer.BadParameter):  # the command line's own answers (usage errors exit 2)
        raise
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line, unless --debug
        if _state["debug"]:
            raise
        codes = _known_errors()
        code = next((c for kind, c in codes.items() if isinstance(exc, kind)), None)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if code is None:
            typer.echo(f"error: unexpected {type(exc).__name__}: {message} (rerun with --debug for details)", err=True)
            raise typer.Exit(70) from None
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code) from None


def _settings(**changes: Any):
    """The environment's settings with the given options (None = not given) applied."""
    from include.settings import get_settings

    settings = get_settings()
    given = {k: v for k, v in changes.items() if v is not None}
    if "topic" in given and "dlq_topic" not in given:
        given["dlq_topic"] = f"{given['topic']}.dlq"
    return settings.with_overrides(**given) if given else settings


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


TopicOpt = Annotated[Optional[str], typer.Option(help="the observations topic (default RETRAIN_TOPIC)")]
SchemaOpt = Annotated[Optional[str], typer.Option(help="schema name or YAML/JSON path (default RETRAIN_SCHEMA)")]
DbUrlOpt = Annotated[Optional[str], typer.Option(help="history database URL (default RETRAIN_DB_URL)")]
ModelOpt = Annotated[str, typer.Option(help="model name: its own checkpoints and history curve")]


@app.command(short_help="CSV files into Kafka, each valid row exactly once")
def ingest(
    files: Annotated[list[str], typer.Argument(help="CSV files (local paths or object-storage URLs)")],
    topic: TopicOpt = None,
    dlq_topic: Annotated[Optional[str], typer.Option(help="dead-letter topic (default <topic>.dlq)")] = None,
    schema: SchemaOpt = None,
    bootstrap_servers: Annotated[Optional[str], typer.Option(help="default KAFKA_BOOTSTRAP_SERVERS")] = None,
    db_url: DbUrlOpt = None,
    max_bad_fraction: Annotated[Optional[float], typer.Option(help="a file with more bad rows is refused whole")] = None,
) -> None:
    """Ingest CSV files into Kafka (the topic's live generation), each valid row exactly once; prints the result as
    JSON. A file older than the newest ingested data waits for a rebuild (one line on stderr says so)."""

    def work() -> None:
        from include.ingest.interval import ingest_files
        from include.ingest.landing import as_path

        settings = _settings(topic=topic, dlq_topic=dlq_topic, schema_name=schema, db_url=db_url,
                             kafka_bootstrap_servers=bootstrap_servers, max_bad_fraction=max_bad_fraction)
        result = ingest_files([as_path(f) for f in files], settings=settings)
        _print_json(result.as_dict())
        for line in result.waiting_lines():  # an older file is not an error: it waits for a rebuild
            typer.echo(line, err=True)

    _run(work)


@app.command(short_help="one bounded training run from the last checkpoint")
def train(
    topic: TopicOpt = None,
    schema: SchemaOpt = None,
    model_name: ModelOpt = "default",
    mode: Annotated[Optional[Mode], typer.Option(
        help="replay: learns from a buffer of recent rows; single_pass: the blog's loop (each row once). "
             "Default: the model's own mode; replay for a new model")] = None,
    reader: Annotated[Reader, typer.Option(help="confluent (explicit offsets) or tfio (the blog's reader)")] = Reader.confluent,
    max_records: Annotated[Optional[int], typer.Option(min=1, help="stop after this many records")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(min=0.001, help="stop after this long")] = None,
    checkpoint_every_s: Annotated[float, typer.Option(min=0, help="checkpoint at least this often")] = 60.0,
    stream_timeout_s: Annotated[Optional[float], typer.Option(help="stop after this long without a message")] = None,
    chunk_batches: Annotated[int, typer.Option(min=1, help="mini-batches per compiled call (and per hand-over from the reader)")] = TrainOptions.chunk_batches,
    drift: Annotated[DriftReaction, typer.Option(help="reaction to a detected drift (detection always runs)")] = DriftReaction(DEFAULT_DRIFT_REACTION),
    drift_detector: Annotated[DriftDetector, typer.Option(help="what watches the prequential error")] = DriftDetector(DEFAULT_DETECTOR),
    register: Annotated[bool, typer.Option(help="end the run with a new model version (for the promotion gate)")] = True,
    db_url: DbUrlOpt = None,
) -> None:
    """Run one bounded training task from the last checkpoint; prints its summary as JSON. It trains the model's
    lineage in the topic's live generation (the model itself until a rebuild switched to ``<model>.gN``)."""

    def work() -> None:
        from include.training.trainer import TrainOptions, train as run_training

        from include.lifecycle.generations import live_training

        base = _settings(topic=topic, schema_name=schema, stream_timeout_s=stream_timeout_s, db_url=db_url)
        settings, lineage = live_training(base, model_name)  # the model's lineage in the live generation
        options = TrainOptions(model_name=lineage, mode=mode.value if mode else None, reader=reader.value, max_records=max_records,
                               max_seconds=max_seconds, checkpoint_every_s=checkpoint_every_s,
                               chunk_batches=chunk_batches, drift=drift.value, drift_detector=drift_detector.value,
                               register=register)
        _print_json(run_training(settings, options).as_dict())

    _run(work)


@app.command(short_help="a fresh model on the whole topic (the chart's baseline)")
def baseline(
    topic: TopicOpt = None,
    schema: SchemaOpt = None,
    model_name: Annotated[str, typer.Option(help="the incremental model this baseline is drawn beside")] = "default",
    max_records: Annotated[int, typer.Option(min=1, help="read at most this many records")] = 1_000_000,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    db_url: DbUrlOpt = None,
) -> None:
    """Train a fresh model on the whole topic and record its held-out accuracy (the chart's baseline line)."""

    def work() -> None:
        from include.training.baseline import train_baseline

        settings = _settings(topic=topic, schema_name=schema, db_url=db_url)
        _print_json(train_baseline(settings, model_name=model_name, max_records=max_records, epochs=epochs))

    _run(work)


@app.command(short_help="the accuracy chart (PNG) and the runs (markdown)")
def report(
    out: Annotated[Path, typer.Option(help="folder for accuracy.png and runs.md")],
    model: Annotated[str, typer.Option(help="model name")] = "default",
    x: Annotated[XAxis, typer.Option(help="x axis")] = XAxis.records,
    max_points: Annotated[int, typer.Option(min=10, max=20_000, help="points per series after downsampling")] = 2000,
    dag_run_id: Annotated[Optional[str], typer.Option(help="only this DAG run's slice")] = None,
    db_url: DbUrlOpt = None,
) -> None:
    """Write the Model accuracy chart (PNG) and the training runs (markdown) from the history database."""

    def work() -> None:
        from include.monitoring.report import write_report

        paths = write_report(out, settings=_settings(db_url=db_url), model_name=model, x_axis=x.value,
                             max_points=max_points, dag_run_id=dag_run_id)
        for kind, path in paths.items():
            typer.echo(f"{kind}: {path}")

    _run(work)


@app.command(short_help="answer the requests topic into <requests topic>.predictions, exactly once")
def score(
    model_name: Annotated[str, typer.Option(help="the model whose champion (or --version) scores")] = "default",
    version: Annotated[Optional[int], typer.Option(min=1, help="score with this version, not the champion")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="keep running (until Ctrl+C/SIGTERM or a limit)")] = False,
    requests_topic: Annotated[Optional[str], typer.Option(help="default RETRAIN_REQUESTS_TOPIC (<topic>.requests)")] = None,
    topic: TopicOpt = None,
    schema: SchemaOpt = None,
    partitions: Annotated[Optional[str], typer.Option(help="only these partitions, e.g. 0,2 (default: all)")] = None,
    max_records: Annotated[Optional[int], typer.Option(min=1, help="stop after this many requests")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(min=0.001, help="stop after this long")] = None,
    batch_messages: Annotated[int, typer.Option(min=1, help="the most requests one transaction carries")] = 10_000,
    stream_timeout_s: Annotated[Optional[float], typer.Option(help="stop after this long without a request")] = None,
    db_url: DbUrlOpt = None,
) -> None:
    """Score the requests topic with the champion (or --version), one Kafka transaction per batch with the consumed
    offsets, so every request gets exactly one answer; prints the summary as JSON."""

    def work() -> None:
        from include.serving.stream import ScoreOptions, score_requests, stop_on_signals

        settings = _settings(topic=topic, schema_name=schema, requests_topic=requests_topic, db_url=db_url)
        options = ScoreOptions(model_name=model_name, version=version, follow=follow, max_records=max_records,
                               max_seconds=max_seconds, partitions=_partitions(partitions),
                               batch_messages=batch_messages, stream_timeout_s=stream_timeout_s)
        with stop_on_signals() as stop:
            _print_json(score_requests(settings, options, stop=stop).as_dict())

    _run(work)


def _partitions(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(sorted({int(p) for p in text.split(",")}))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of partitions", param_hint="--partitions") from None


@app.command(short_help="demo observation files into the landing folder")
def generate(
    start: Annotated[str, typer.Option(help="first date, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last date, inclusive")],
    out: Annotated[Optional[Path], typer.Option(help="output folder (default RETRAIN_LANDING_DIR)")] = None,
    seed: int = 7,
    drift_from: Annotated[Optional[str], typer.Option(help="first drifted date, YYYY-MM-DD")] = None,
    shops: Annotated[int, typer.Option(min=1)] = 100,
    noise: Annotated[float, typer.Option(min=0.0, max=0.5, help="label flip probability")] = 0.05,
) -> None:
    """Generate demo observation files (one per day, with a .meta.json sidecar) into the landing folder."""

    def work() -> None:
        from include.demo.generate import bayes_accuracy, generate_range, read_meta

        folder = out or Path(_settings().landing_dir)
        paths = generate_range(_date(start, "--start"), _date(end, "--end"), folder, seed=seed, shops=shops,
                               noise=noise, drift_from=_date(drift_from, "--drift-from") if drift_from else None)
        rows = sum(read_meta(p)["rows"] for p in paths)
        typer.echo(f"{len(paths)} files, {rows} rows in {folder}; Bayes-optimal accuracy {bayes_accuracy(paths):.4f}")

    _run(work)


@app.command(short_help="the main job behind `make run`")
def demo(
    step: Annotated[DemoStep, typer.Argument(help="prepare: demo data and the backfill (scheduler stopped); wait: "
                                                  "until the runs are done, then the table; table: only the table; "
                                                  "scoring: how to score rows with the champion; older: the week "
                                                  "before the demo lands, rebuilt and switched")],
    start: Annotated[str, typer.Option(help="the demo's first day, YYYY-MM-DD")] = "2026-01-05",
    weeks: Annotated[int, typer.Option(min=1)] = 4,
    drift_week: Annotated[int, typer.Option(min=0, help="the week the rule changes (0: no drift)")] = 3,
    timeout_s: Annotated[float, typer.Option(min=1)] = 1800,
) -> None:
    """The main job behind `make run`: demo weeks through the real DAGs, then an accuracy table."""

    def work() -> None:
        from include.demo.main_job import run_step

        typer.echo(run_step(step.value, _settings(), start=_date(start, "--start"), weeks=weeks,
                            drift_week=drift_week or None, timeout_s=timeout_s), nl=False)

    _run(work)


@app.command(short_help="score a CSV file (or stdin) with the champion or a version")
def predict(
    file: Annotated[str, typer.Argument(help="CSV in the schema's layout, the label column optional; - for stdin")] = "-",
    model_name: ModelOpt = "default",
    version: Annotated[Optional[int], typer.Option(min=1, help="this version instead of the champion")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="how scored rows are written")] = OutputFormat.csv,
    output: Annotated[Optional[Path], typer.Option(help="write scored rows here instead of stdout")] = None,
    errors: Annotated[Optional[Path], typer.Option(help="write refused rows here instead of stderr")] = None,
    schema: SchemaOpt = None,
    db_url: DbUrlOpt = None,
) -> None:
    """Score every row ingest would accept; report every row it would refuse (JSON lines, ingest's reasons).

    Exit code 0 when every row was scored, 1 when some were refused (the last line on stderr is the summary), 2 for
    input that is not the schema's layout, 6 when there is no such version or no champion.
    """

    def work() -> None:
        from include.serving.predict import run_predict

        try:
            summary = run_predict(_settings(schema_name=schema, db_url=db_url), file, model_name=model_name,
                                  version=version, fmt=fmt.value, output=output, errors_path=errors,
                                  stdin=sys.stdin.buffer, stdout=sys.stdout, stderr=sys.stderr)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped early (`| head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        typer.echo(summary.line(), err=True)
        if summary.refused:
            raise typer.Exit(1)

    _run(work)


@app.command(short_help="the HTTP scorer (TensorFlow Serving's REST API), following the champion")
def serve(
    model_name: Annotated[Optional[list[str]], typer.Option(help="model name to serve (repeat for more)")] = None,
    host: Annotated[Optional[str], typer.Option(help="default RETRAIN_SERVE_HOST")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="default RETRAIN_SERVE_PORT")] = None,
    poll_s: Annotated[float, typer.Option(min=0.01, help="how often the champion pointer is read")] = 0.2,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    schema: SchemaOpt = None,
    db_url: DbUrlOpt = None,
) -> None:
    """Serve POST /v1/models/<name>:predict and the model status until SIGTERM; promotions are picked up live."""

    def work() -> None:
        from include.serving.http import run_server

        run_server(_settings(schema_name=schema, db_url=db_url), model_name or ["default"], host=host, port=port,
                   interval_s=poll_s, access_log=access_log)

    _run(work)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


def main() -> None:
    from include.cli_models import models_app
    from include.cli_rebuild import generations_app, rebuild_app

    app.add_typer(models_app, name="models", short_help="model versions: list, show, evaluate, promote, rollback")
    app.add_typer(rebuild_app, name="rebuild", short_help="rebuild on the full history: request, run, status, cancel")
    app.add_typer(generations_app, name="generations", short_help="the topic's generations: list, switch back")
    app()
