"""Training a rebuild's lineage: from scratch, in bounded runs, never past the live lineage, with a version exactly
where the promotion gate compares it with the live champion.

Where the gate compares (:func:`gate_point`). The live lineage's newest version ``L`` held out rows of its own run
that no live version trained on (``holdout.npz``): the newest held-out rows, the ones the live gate judges its
candidate on. The live champion trained on none of them as long as it is older than ``L``. The rebuild's candidate
must not have seen them either, so it is the rebuild's version trained up to the point where ``L``'s run began (the
live candidate's point in the stream, plus the older files), mapped into the rebuild's topic (:func:`map_point`:
through the two ledgers, file by file, offset by offset inside a file). Then the lineage goes on to the live
lineage's end (``L``'s offsets, mapped) and stops there: it has caught up. It never trains past the live lineage,
so when the live lineage registers a newer version, the point where that run began is where the rebuild stands.

Each run is :func:`include.training.trainer.train` on the generation's topic with the lineage's model name, a record
limit (``RETRAIN_REBUILD_RUN_RECORDS``) and the stop offsets: its checkpoint, history rows and version are the
trainer's, so a run killed anywhere resumes from the last checkpoint and trains nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import select

from include.history import db
from include.ingest.ledger import Ledger
from include.lifecycle.generations import Generations, generation_settings
from include.lifecycle.registry import Registry, VersionInfo
from include.rebuild import records
from include.rebuild.records import RebuildInfo
from include.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatePoint:
    """Where the rebuild's lineage stands against the live one.

    Attributes:
        live_lineage: The live lineage of the rebuild's model name.
        evaluation: The live lineage's newest version: its held-out rows are the gate's rows.
        champion: The live champion's version number.
        point: Where ``evaluation``'s run began, mapped into the rebuild's topic: the rebuild's candidate point.
        end: The live lineage's end (``evaluation``'s offsets), mapped: where the rebuild stops.
        waiting: Why the gate cannot decide yet (None: it can, once the lineage has a version at ``point``).
    """

    live_lineage: str
    evaluation: VersionInfo | None
    champion: int | None
    point: dict[int, int] | None
    end: dict[int, int] | None
    waiting: str | None = None


def map_point(live_files: list[db.IngestedFile], rebuild_files: Mapping[str, db.IngestedFile],
              live_offsets: Mapping[int, int]) -> dict[int, int] | None:
    """A position of the live topic (``{partition: next offset}``) as the same position of the rebuild's topic.

    Per partition: the first live file (date order, the rebuild topic's order) with a row at or past the position; the
    position is that file's first offset in the rebuild's topic plus how far into the file it is. Past every live
    file: just after the last one, and past its transaction marker (the offset after a file's last row) when the
    live position is past it, so a lineage stopped there has nothing but a marker left to read. None when a live file
    it needs is not in the rebuild's topic yet.
    """
    out: dict[int, int] = {}
    for partition, offset in live_offsets.items():
        key, last, live_last = str(partition), None, None
        for f in live_files:
            span = (f.offsets or {}).get(key)
            if not span:
                continue
            target = rebuild_files.get(f.content_sha256)
            their = (target.offsets or {}).get(key) if target is not None else None
            if their is None:
                return None
            if span[1] >= offset:  # this file has rows at or past the position
                out[int(partition)] = their[0] + max(0, int(offset) - span[0])
                break
            last, live_last = their, span[1]
        else:
            if last is not None:
                out[int(partition)] = last[1] + min(2, int(offset) - live_last)
    return out


def gate_point(settings: Settings, registry: Registry, rebuild: RebuildInfo) -> GatePoint:
    """Where the gate compares the rebuild's lineage with the live one (see the module docstring)."""
    sessions = registry.sessions
    live_lineage, live_generation = Generations(sessions, settings.topic).lineage(rebuild.model_name)
    versions = registry.versions(live_lineage)
    champion = registry.champion_version(live_lineage)
    if not versions:
        return GatePoint(live_lineage, None, champion, None, None,
                         f"the live lineage {live_lineage!r} has no version yet: nothing to compare with")
    evaluation = versions[0]
    began = _run_start(sessions, evaluation, versions)
    live_topic = generation_settings(settings, live_generation).topic
    live_files = [f for f in Ledger(sessions, live_topic).files("committed") if f.offsets]
    rebuild_files = {f.content_sha256: f for f in Ledger(sessions, rebuild.topic).files("committed")}
    point = map_point(live_files, rebuild_files, began)
    end = map_point(live_files, rebuild_files, {int(p): int(o) for p, o in evaluation.offsets.items()})
    waiting = None
    if point is None or end is None:
        waiting = f"the rebuild's topic {rebuild.topic} does not hold every file of {live_topic} yet"
    elif champion is None:
        waiting = f"the live lineage {live_lineage!r} has no champion"
    elif champion >= evaluation.version:
        waiting = (f"the live champion is version {champion} of {live_lineage!r}, its newest: the gate waits for the "
                   "live lineage's next version (rows neither model has trained on)")
    return GatePoint(live_lineage, evaluation, champion, point, end, waiting)


def _run_start(sessions, evaluation: VersionInfo, versions: list[VersionInfo]) -> dict[int, int]:
    """Where the run that made ``evaluation`` began: its recorded start, else the previous version's end, else 0."""
    if evaluation.run_id:
        with sessions() as session:
            run = session.get(db.TrainingRun, evaluation.run_id)
        if run is not None and run.offsets_from:
            return {int(p): int(o) for p, o in run.offsets_from.items()}
    earlier = [v for v in versions if v.version < evaluation.version]
    if earlier:
        return {int(p): int(o) for p, o in earlier[0].offsets.items()}
    return {int(p): 0 for p in evaluation.offsets}


def candidate_at(registry: Registry, lineage: str, point: Mapping[int, int]) -> VersionInfo | None:
    """The lineage's version trained exactly up to ``point`` (the gate's candidate), or None."""
    for version in registry.versions(lineage):
        offsets = {int(p): int(o) for p, o in version.offsets.items()}
        if all(offsets.get(p) == o for p, o in point.items()):
            return version
    return None


def lineage_position(settings: Settings, lineage: str) -> dict[int, int]:
    """The next offsets the lineage's newest checkpoint has trained up to ({} before its first run)."""
    from include.training.checkpoint import CheckpointStore

    loaded = CheckpointStore(Path(settings.checkpoint_dir) / lineage).load_latest(model=False)
    return {int(p): int(o) for p, o in ((loaded.meta.get("offsets") or {}) if loaded else {}).items()}


def behind(position: Mapping[int, int], target: Mapping[int, int]) -> bool:
    return any(position.get(p, 0) < o for p, o in target.items())


@dataclass
class TrainingProgress:
    runs: list[dict[str, Any]] = field(default_factory=list)
    position: dict[int, int] = field(default_factory=dict)
    caught_up: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "position": {str(p): o for p, o in self.position.items()},
                "caught_up": self.caught_up}


def train_lineage(settings: Settings, rebuild: RebuildInfo, *, use_airflow: bool = False, dag_id: str | None = None,
                  dag_run_id: str | None = None, max_runs: int | None = None,
                  mode: str | None = None) -> TrainingProgress:
    """Bounded runs of the rebuild's lineage until it stands at the live lineage's end (stopping at the gate's point
    on the way), or ``max_runs`` runs. ``settings`` are the base topic's."""
    from include.training.options import TrainOptions
    from include.training.trainer import train

    registry = Registry(settings)
    target = generation_settings(settings, rebuild.generation)
    progress = TrainingProgress(position=lineage_position(settings, rebuild.lineage))
    while max_runs is None or len(progress.runs) < max_runs:
        where = gate_point(settings, registry, rebuild)
        if where.point is None or where.end is None:
            log.info("rebuild %d: %s", rebuild.id, where.waiting)
            break
        cap = where.point if behind(progress.position, where.point) else where.end
        if not behind(progress.position, cap):
            progress.caught_up = True
            break
        options = TrainOptions(model_name=rebuild.lineage, mode=mode, max_records=settings.rebuild_run_records,
                               stop_offsets=dict(cap))
        summary = train(target, options, use_airflow=use_airflow, dag_id=dag_id, dag_run_id=dag_run_id)
        log.info("rebuild %d: run %s trained %d records up to %s (stop %s; the gate's point %s, the live end %s), "
                 "version %s", rebuild.id, summary.run_id, summary.records, summary.offsets_to, cap, where.point,
                 where.end, summary.version)
        progress.runs.append({"run_id": summary.run_id, "records": summary.records, "version": summary.version,
                              "offsets_to": summary.offsets_to, "stop": {str(p): o for p, o in cap.items()}})
        new_position = {int(p): int(o) for p, o in summary.offsets_to.items()} or progress.position
        moved = new_position != progress.position
        progress.position = new_position
        record_progress(registry, rebuild, progress.position)
        if not moved:
            break  # nothing was readable up to the stop (the broker is behind its ledger?): try again later
    return progress


def record_progress(registry: Registry, rebuild: RebuildInfo, position: Mapping[int, int]) -> None:
    """The rebuild's trained-up-to and records trained, from its lineage's newest version."""
    with registry.sessions() as session:
        newest = session.scalars(select(db.ModelVersion).where(db.ModelVersion.model_name == rebuild.lineage)
                                 .order_by(db.ModelVersion.version.desc()).limit(1)).first()
    records.update(registry.sessions, rebuild.id, trained_up_to={str(p): int(o) for p, o in position.items()},
                   records_trained=int(newest.records_total) if newest is not None else 0)
