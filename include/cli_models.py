"""``python -m include models ...``: the model versions, the promotion gate, promotion and rollback by hand.

Each command reads its options and calls :mod:`include.lifecycle`; every change is recorded with who (``--actor``,
the OS user by default) and why (``--reason``). A request the lifecycle cannot meet (no such version, nothing to
roll back to, files pruned) is one ``error:`` line and exit code 6.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from include.cli import DbUrlOpt, _print_json, _run, _settings

models_app = typer.Typer(help="model versions: list, show, evaluate (the gate), promote, rollback",
                         no_args_is_help=True, rich_markup_mode=None)

NameOpt = Annotated[str, typer.Option("--model-name", help="model name")]
DEFAULT_NAME = "default"  # as train, predict, serve and score
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (recorded in the audit trail)")]


def _os_user() -> str:
    import os
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


ActorOpt = Annotated[Optional[str], typer.Option("--actor", help="who (default: the OS user)")]


def _registry(db_url: str | None):
    from include.lifecycle.registry import Registry

    return Registry(_settings(db_url=db_url))


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def version_table(versions: list) -> str:
    """One line per version: number, status, when, records, window accuracy, the gate's numbers and decision."""
    head = ("version", "status", "created (UTC)", "records", "window acc", "gate: cand", "champ", "rows", "decision",
            "files")
    rows = [head]
    for v in versions:
        gate = v.gate or {}
        rows.append((str(v.version), v.status, v.created_at.strftime("%Y-%m-%d %H:%M:%S"), str(v.records_total),
                     _fmt(v.metrics.get("window_accuracy")), _fmt(gate.get("candidate_accuracy")),
                     _fmt(gate.get("champion_accuracy")), _fmt(gate.get("rows"), "d"), gate.get("decision") or "-",
                     "on disk" if v.on_disk else "pruned"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


AllNamesOpt = Annotated[Optional[str], typer.Option("--model-name", help="model name (default: all)")]


@models_app.command("list", short_help="the versions of a model (or of every model)")
def list_versions(model_name: AllNamesOpt = None, db_url: DbUrlOpt = None) -> None:
    """The versions of a model, newest first, with their status and the gate's numbers, as a table."""

    def work() -> None:
        registry = _registry(db_url)
        names = [model_name] if model_name else registry.model_names()
        if not names:
            typer.echo("no model versions yet: a training run makes one (`python -m include train`)")
        for name in names:
            champion = registry.champion_version(name)
            typer.echo(f"model {name}: champion version {champion if champion is not None else '-'}")
            typer.echo(version_table(registry.versions(name)))

    _run(work)


@models_app.command(short_help="one version (default: the champion) as JSON, with its audit trail")
def show(version: Annotated[Optional[int], typer.Option(help="default: the champion")] = None,
         model_name: NameOpt = DEFAULT_NAME, db_url: DbUrlOpt = None) -> None:
    """One version as JSON: its facts, the gate's numbers and every event about it."""

    def work() -> None:
        registry = _registry(db_url)
        info = registry.get(model_name, version) if version is not None else registry.resolve(model_name)
        _print_json({**info.as_dict(), "on_disk": info.on_disk, "events": registry.events(model_name, info.version)})

    _run(work)


@models_app.command(short_help="run the promotion gate on the waiting candidates")
def evaluate(model_name: NameOpt = DEFAULT_NAME, db_url: DbUrlOpt = None) -> None:
    """Judge the waiting candidate(s) against the champion (forward evaluation) and record the decisions as JSON."""

    def work() -> None:
        from include.lifecycle.gate import evaluate as run_gate

        _print_json([j.as_dict() for j in run_gate(_registry(db_url), model_name)])

    _run(work)


@models_app.command(short_help="serve a version (by hand)")
def promote(version: Annotated[int, typer.Option(help="the version to serve")], reason: ReasonOpt,
            model_name: NameOpt = DEFAULT_NAME, actor: ActorOpt = None, db_url: DbUrlOpt = None) -> None:
    """Make a version on disk the champion, whatever the gate said; recorded with who and why."""

    def work() -> None:
        from include.lifecycle.promotion import promote as do_promote

        info = do_promote(_registry(db_url), model_name, version, actor=actor or _os_user(), reason=reason)
        _print_json({"model_name": model_name, "champion_version": info.version, "status": info.status})

    _run(work)


@models_app.command(short_help="serve the previous champion again (or --version)")
def rollback(reason: ReasonOpt,
             version: Annotated[Optional[int], typer.Option(help="default: the previous champion")] = None,
             model_name: NameOpt = DEFAULT_NAME, actor: ActorOpt = None, db_url: DbUrlOpt = None) -> None:
    """Serve the previous champion again (or an earlier version still on disk); recorded with who and why."""

    def work() -> None:
        from include.lifecycle.promotion import rollback as do_rollback

        info = do_rollback(_registry(db_url), model_name, actor=actor or _os_user(), reason=reason, to_version=version)
        _print_json({"model_name": model_name, "champion_version": info.version, "status": info.status})

    _run(work)
