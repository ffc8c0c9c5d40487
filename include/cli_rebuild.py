"""``python -m include rebuild ...`` and ``python -m include generations ...``: rebuilds and the live generation.

Each command reads its options and calls :mod:`include.rebuild` or :mod:`include.lifecycle.generations`; a change
is recorded with who (``--actor``, the OS user by default) and why (``--reason``). A request that cannot be met (no
such generation or rebuild, a lineage without a champion) is one ``error:`` line and exit code 6.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from include.cli import DbUrlOpt, TopicOpt, _print_json, _run, _settings
from include.cli_models import ActorOpt, ReasonOpt, _os_user

rebuild_app = typer.Typer(help="rebuilds: a new generation of the topic, a new lineage, the gate, the switch",
                          no_args_is_help=True, rich_markup_mode=None)
generations_app = typer.Typer(help="the generations of the topic: list them, switch the live one",
                              no_args_is_help=True, rich_markup_mode=None)

ModelNameOpt = Annotated[Optional[str], typer.Option("--model-name",
                                                     help="the model to rebuild (default RETRAIN_REBUILD_MODEL)")]


def _sessions(settings):
    from include.history import db

    return db.session_factory(settings.db_url)


@rebuild_app.command("request", short_help="request a rebuild (or join the running one); the DAG runs it")
def request(reason: ReasonOpt, model_name: ModelNameOpt = None, topic: TopicOpt = None, actor: ActorOpt = None,
            db_url: DbUrlOpt = None) -> None:
    """Record a rebuild request; it joins the running rebuild if there is one. Prints the rebuild as JSON."""

    def work() -> None:
        from include.rebuild import records

        settings = _settings(topic=topic, db_url=db_url)
        info, joined = records.request(_sessions(settings), settings.topic, model_name or settings.rebuild_model,
                                       reason=reason, actor=actor or _os_user())
        _print_json({"joined": joined, **info.as_dict()})

    _run(work)


@rebuild_app.command("run", short_help="run the requested (or a new) rebuild here, to its decision")
def run(reason: Annotated[Optional[str], typer.Option("--reason", help="request one (or join the running one)")] = None,
        model_name: ModelNameOpt = None, topic: TopicOpt = None, actor: ActorOpt = None,
        mode: Annotated[Optional[str], typer.Option(help="learner mode of a new lineage (default replay)")] = None,
        db_url: DbUrlOpt = None) -> None:
    """Fill the new generation, train its lineage, then the gate: switch, reject, or wait. Safe to run again (after a
    crash, beside the DAG): it continues what exists. Prints what it did as JSON."""

    def work() -> None:
        from include.rebuild.steps import run_rebuild

        settings = _settings(topic=topic, db_url=db_url)
        _print_json(run_rebuild(settings, reason=reason, actor=actor or _os_user(), model_name=model_name, mode=mode))

    _run(work)


@rebuild_app.command("status", short_help="the rebuilds, newest first")
def status(topic: TopicOpt = None, db_url: DbUrlOpt = None) -> None:
    """The rebuilds of the topic, newest first, as JSON: state, files, records, the gate's numbers, the decision."""

    def work() -> None:
        from include.rebuild import records

        settings = _settings(topic=topic, db_url=db_url)
        _print_json([r.as_dict() for r in records.all_of(_sessions(settings), settings.topic)])

    _run(work)


@rebuild_app.command("cancel", short_help="stop the running rebuild (its generation is never made live)")
def cancel(reason: ReasonOpt, topic: TopicOpt = None, actor: ActorOpt = None, db_url: DbUrlOpt = None) -> None:
    """Cancel the running rebuild; the live generation is untouched."""

    def work() -> None:
        from include.lifecycle.registry import LifecycleError
        from include.rebuild import records

        settings = _settings(topic=topic, db_url=db_url)
        active = records.active(_sessions(settings), settings.topic)
        if active is None:
            raise LifecycleError(f"no rebuild of {settings.topic!r} is running")
        _print_json(records.cancel(_sessions(settings), active.id, actor=actor or _os_user(), reason=reason).as_dict())

    _run(work)


def generation_table(generations: list, live: int) -> str:
    head = ("generation", "status", "topic", "lineage", "rebuild", "changed (UTC)")
    rows = [head]
    for g in generations:
        rows.append((f"{g.generation}{' *' if g.generation == live else ''}", g.status, g.topic,
                     g.lineage or "(every model name)", str(g.rebuild_id or "-"),
                     g.changed_at.strftime("%Y-%m-%d %H:%M:%S") if g.changed_at else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


@generations_app.command("list", short_help="the generations of the topic (* live)")
def list_generations(topic: TopicOpt = None, db_url: DbUrlOpt = None) -> None:
    """The generations of the topic, oldest first, the live one marked, as a table."""

    def work() -> None:
        from include.lifecycle.generations import Generations

        settings = _settings(topic=topic, db_url=db_url)
        generations = Generations(_sessions(settings), settings.topic)
        live = generations.live()
        typer.echo(f"topic {settings.topic}: live generation {live}")
        typer.echo(generation_table(generations.all(), live))

    _run(work)


@generations_app.command("switch", short_help="make a kept generation live again (switch back), by hand")
def switch_generation(generation: Annotated[int, typer.Option(min=1, help="the generation to make live")],
                      reason: ReasonOpt, model_name: Annotated[str, typer.Option("--model-name")] = "default",
                      topic: TopicOpt = None, actor: ActorOpt = None, db_url: DbUrlOpt = None) -> None:
    """Make a standby generation live again (or the live one: nothing changes), in one transaction; ingest, training
    and serving follow it. First its topic gets the files it lacks. Recorded with who and why."""

    def work() -> None:
        from include.kafka.clients import KafkaClients
        from include.lifecycle.generations import Generations, switch
        from include.rebuild.fill import append_missing, generation_lock
        from include.schema import load_schema

        settings = _settings(topic=topic, db_url=db_url)
        sessions = _sessions(settings)
        generations = Generations(sessions, settings.topic)
        target, live = generations.get(generation), generations.live()
        if target.status == "standby":  # bring it up to date with the live one first (it follows it anyway)
            with generation_lock(settings, target.topic, wait=True):
                append_missing(settings, KafkaClients(settings), sessions, load_schema(settings.schema_name),
                               source_generation=live, target_generation=generation, include_waiting=False)
        result = switch(sessions, settings.topic, generation, model_name, actor=actor or _os_user(), reason=reason,
                        keep=settings.keep_generations)
        if result.retired:
            from include.rebuild.retention import delete_retired_topics

            delete_retired_topics(settings)
        _print_json(result.as_dict())

    _run(work)
