"""Filling a generation: the files it lacks, ingested into its topic in date order, each exactly once.

Two callers, one function (:func:`append_missing`):

* a rebuild fills its new generation with every file the live generation's ledger holds (committed) plus the ones
  waiting for a rebuild, oldest first, then keeps appending what the live generation gets until it has caught up;
* a live ingest appends its new files to the generations that follow the live one (:func:`append_to_followers`):
  a rebuild's generation once its own fill is done, and the ``standby`` generations kept for switching back. So
  while a rebuild runs, new files go to both generations.

Each file goes through :func:`include.ingest.transaction.ingest_file` with the generation's settings: one Kafka
transaction per file, the ledger keyed by (generation topic, content), so a rerun or a crash anywhere duplicates
nothing. Order is kept by one lock per generation topic (an ``flock`` beside the checkpoints, released by the kernel
when a process dies) held while a writer lists what is missing and appends it; a file dated before what the
generation already holds is never appended (it is *left out*: a rebuild records it, and it waits for the next
rebuild). A file must still have the content the ledger recorded: a changed or missing file is an error that names
it, never a silent gap.
"""

from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from include.history import db
from include.ingest.errors import IngestError
from include.ingest.landing import as_path, content_sha256
from include.ingest.ledger import WAITING, Ledger
from include.ingest.markers import control_topic
from include.ingest.transaction import FileResult, ingest_file
from include.kafka.clients import KafkaClients
from include.lifecycle.generations import Generations, generation_settings, generation_topic
from include.rebuild import records
from include.schema import CsvSchema
from include.settings import Settings

log = logging.getLogger(__name__)

_NEW = ("committed", "recovered", "empty")


@dataclass
class FillResult:
    """What one fill appended to a generation, and what it had to leave out."""

    topic: str
    files: list[FileResult] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if f.status in _NEW)

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "files": [f.file for f in self.files if f.status in _NEW], "rows": self.rows,
                "left_out": self.left_out}


@contextmanager
def generation_lock(settings: Settings, topic: str, *, wait: bool) -> Iterator[bool]:
    """Hold the generation topic's fill lock for the block; yields False (not held) when ``wait`` is off and another
    writer holds it."""
    folder = Path(settings.checkpoint_dir) / ".generations"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{topic}.fill.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def missing_files(sessions, source_topic: str, target_topic: str, *,
                  include_waiting: bool) -> tuple[list[db.IngestedFile], list[db.IngestedFile]]:
    """What ``target_topic`` lacks of ``source_topic``'s ledger, in date order: ``(to append, left out)``.

    Left out: files dated before the newest data the target holds (they would go behind it).
    """
    statuses = ("committed", WAITING) if include_waiting else ("committed",)
    done = {f.content_sha256 for f in Ledger(sessions, target_topic).files("committed")}
    newest = Ledger(sessions, target_topic).newest_date()
    todo, left_out, seen = [], [], set()
    for f in Ledger(sessions, source_topic).files(*statuses):
        if f.content_sha256 in done or f.content_sha256 in seen:
            continue
        seen.add(f.content_sha256)
        (left_out if newest is not None and f.file_date is not None and f.file_date < newest else todo).append(f)
    return todo, left_out


def ensure_topics(clients: KafkaClients, settings: Settings) -> None:
    """A generation's data, dead-letter and control topics (created as the live ones are)."""
    clients.ensure_topic(settings.topic, partitions=settings.topic_partitions, retention_ms=settings.topic_retention_ms)
    clients.ensure_topic(settings.dlq_topic, partitions=1, retention_ms=settings.topic_retention_ms)
    clients.ensure_topic(control_topic(settings.topic), partitions=1, retention_ms=-1)


def append_missing(settings: Settings, clients: KafkaClients, sessions, schema: CsvSchema, *, source_generation: int,
                   target_generation: int, include_waiting: bool, dag_run_id: str | None = None,
                   on_file: Callable[[FileResult], None] | None = None) -> FillResult:
    """Append to the target generation what it lacks of the source's ledger, oldest first, until nothing is missing.

    The caller holds the target's :func:`generation_lock`. ``settings`` are the base topic's.
    """
    source = generation_settings(settings, source_generation)
    target = generation_settings(settings, target_generation)
    ensure_topics(clients, target)
    result = FillResult(target.topic)
    while True:
        todo, left_out = missing_files(sessions, source.topic, target.topic, include_waiting=include_waiting)
        result.left_out = [{"file": f.file_name, "date": f.file_date, "sha256": f.content_sha256,
                            "status": f.status} for f in left_out]
        if not todo:
            return result
        for f in todo:
            path = as_path(f.file_name)
            _check_unchanged(path, f, source.topic)
            done = ingest_file(path, settings=target, schema=schema, clients=clients, sessions=sessions,
                               dag_run_id=dag_run_id, older="refuse")
            result.files.append(done)
            if on_file is not None:
                on_file(done)


def _check_unchanged(path, row: db.IngestedFile, topic: str) -> None:
    try:
        sha, _ = content_sha256(path)
    except FileNotFoundError:
        raise IngestError(f"{row.file_name}: recorded in the ledger of {topic} but no longer there; a rebuild needs "
                          "every file: put it back (same content) and run the rebuild again") from None
    if sha != row.content_sha256:
        raise IngestError(f"{row.file_name}: its content changed since it was recorded in {topic} (sha256 "
                          f"{row.content_sha256[:12]} -> {sha[:12]}); put the recorded content back and run the "
                          "rebuild again")


def append_to_followers(settings: Settings, clients: KafkaClients, sessions, schema: CsvSchema, *,
                        dag_run_id: str | None = None) -> dict[int, dict[str, Any]]:
    """After a live ingest: append the new files to the generations that follow the live one, as far as each can take
    them now. A generation whose lock another writer holds is skipped: that writer (a rebuild's fill) appends them.

    Returns:
        ``{generation: fill result}`` of the generations that got something or were skipped (``skipped: true``).
    """
    generations = Generations(sessions, settings.topic)
    live = generations.live()
    targets = [(g.generation, False) for g in generations.following()]
    rebuild = records.active(sessions, settings.topic)
    if rebuild is not None and rebuild.state in ("training", "gating"):
        targets.append((rebuild.generation, True))
    out: dict[int, dict[str, Any]] = {}
    for generation, is_rebuild in targets:
        topic = generation_settings(settings, generation).topic
        with generation_lock(settings, topic, wait=False) as held:
            if not held:
                log.info("generation %d (%s) is being filled by another writer: it appends the new files", generation,
                         topic)
                out[generation] = {"topic": topic, "skipped": True}
                continue
            if is_rebuild and records.get(sessions, rebuild.id).state not in ("training", "gating"):
                continue  # finished meanwhile (switched, rejected): nothing to follow
            filled = append_missing(settings, clients, sessions, schema, source_generation=live,
                                    target_generation=generation, include_waiting=is_rebuild, dag_run_id=dag_run_id)
        if filled.files:
            log.info("generation %d (%s) follows the live one: %d new file(s), %d rows appended", generation, topic,
                     len(filled.files), filled.rows)
            out[generation] = filled.as_dict()
        if is_rebuild and filled.files:
            _count_appended(sessions, rebuild.id, filled)
    return out


def _count_appended(sessions, rebuild_id: int, filled: FillResult) -> None:
    info = records.get(sessions, rebuild_id)
    live = Generations(sessions, info.base_topic).live()
    records.update(sessions, rebuild_id, **counts(sessions, generation_topic(info.base_topic, live), info.topic))


def counts(sessions, source_topic: str, target_topic: str) -> dict[str, Any]:
    """A rebuild's fill progress from the ledgers: files planned (in its generation plus still missing), ingested,
    their rows, and the files left out."""
    todo, left_out = missing_files(sessions, source_topic, target_topic, include_waiting=True)
    done = Ledger(sessions, target_topic).files("committed")
    return {"files_planned": len(done) + len(todo), "files_ingested": len(done),
            "rows_ingested": sum(f.rows_valid for f in done),
            "files_left_out": [{"file": f.file_name, "date": f.file_date, "sha256": f.content_sha256,
                                "status": f.status} for f in left_out]}
