"""Generations of a topic: which one is live, the model lineage of each, and the one atomic switch between them.

The data model (tables in :mod:`include.history.db`, created by migration 0003):

* **Generation** ``(base topic, N)``: generation 1 of base topic ``T`` (``RETRAIN_TOPIC``) is ``T`` itself, and every
  model name trained on it is its own lineage (``default``...). Generation ``N >= 2`` is the topic ``T.gN``, filled
  by a rebuild (:mod:`include.rebuild`) with every file of the ledger in date order, and holds one **lineage**: the
  model name ``<model>.gN`` (its own checkpoints, versions, champion and history curve), trained there from
  scratch. Status: ``rebuilding``, ``live``, ``standby`` (a former live generation kept for switching back; new
  files still go to it), ``rejected`` (its rebuild failed the gate), ``retired`` (beyond ``RETRAIN_KEEP_GENERATIONS``:
  its topics deleted, its rows kept).
* **The live-generation pointer** ``generation_pointers`` (one row per base topic; none means generation 1): the
  generation ingest writes to, training trains and serving serves. A model name ``M`` is served from its lineage
  in the live generation (``M.gN`` when generation N was rebuilt for ``M``, else ``M`` itself in generation 1).
* **The switch** (:func:`switch`) is one database transaction: the pointer, the generations' statuses, the new
  lineage's champion (its pointer, its versions' statuses: as :mod:`include.lifecycle.promotion` does), the
  rebuild's decision and the audit rows of both lineages change together or not at all, so a reader (the server
  polls :func:`served` every 200 ms) sees the old generation and its champion or the new one and its champion,
  never a mixture. Switching back (``python -m include generations switch``) is the same step.
* **Rebuild records** (``rebuilds``): see :mod:`include.rebuild.records`. **Ledger**: a file older than the live
  generation's newest data is recorded with status ``waiting_for_rebuild`` (:mod:`include.ingest.ledger`) and
  produced nowhere until a rebuild takes it; the ledger is keyed by (generation topic, file content).

This module only reads, except :func:`switch`, :func:`ensure_first` and :func:`mark_retired`; it never touches Kafka
(deleting a retired generation's topics is :mod:`include.rebuild.retention`'s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from include import faults
from include.history import db
from include.lifecycle.registry import LifecycleError
from include.settings import Settings

log = logging.getLogger(__name__)

FIRST = 1
STATUSES = ("rebuilding", "live", "standby", "rejected", "retired")
SWITCHABLE = ("live", "standby", "rebuilding")


def generation_topic(base_topic: str, generation: int) -> str:
    """The Kafka topic of a generation: the base topic itself for generation 1, else ``<base>.g<N>``."""
    return base_topic if int(generation) == FIRST else f"{base_topic}.g{int(generation)}"


def lineage_name(model_name: str, generation: int) -> str:
    """The model name of ``model_name``'s lineage in a generation: itself in generation 1, else ``<model>.g<N>``."""
    return model_name if int(generation) == FIRST else f"{model_name}.g{int(generation)}"


def generation_settings(settings: Settings, generation: int) -> Settings:
    """``settings`` pointed at a generation's topic (and its dead-letter and control topics follow); the requests
    topic and the scorer's group stay the base topic's: serving does not move with generations."""
    if int(generation) == FIRST:
        return settings
    topic = generation_topic(settings.topic, generation)
    return settings.with_overrides(topic=topic, dlq_topic=f"{topic}.dlq", requests_topic=settings.requests_topic,
                                   scorer_group=settings.scorer_group)


@dataclass(frozen=True)
class GenerationInfo:
    """One generation as recorded (generation 1 is shown even before anything recorded it)."""

    base_topic: str
    generation: int
    topic: str
    status: str
    model_name: str | None
    lineage: str | None
    rebuild_id: int | None
    created_at: datetime | None
    changed_at: datetime | None
    retired_at: datetime | None

    @property
    def live(self) -> bool:
        return self.status == "live"

    def lineage_of(self, model_name: str) -> str | None:
        """``model_name``'s lineage in this generation (None: it was not rebuilt here)."""
        if self.generation == FIRST:
            return model_name
        return self.lineage if self.model_name == model_name else None

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("created_at", "changed_at", "retired_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def _info(row: db.Generation) -> GenerationInfo:
    return GenerationInfo(base_topic=row.base_topic, generation=row.generation, topic=row.topic, status=row.status,
                          model_name=row.model_name, lineage=row.lineage, rebuild_id=row.rebuild_id,
                          created_at=row.created_at, changed_at=row.changed_at, retired_at=row.retired_at)


def _first(base_topic: str, live: bool) -> GenerationInfo:
    return GenerationInfo(base_topic, FIRST, base_topic, "live" if live else "standby", None, None, None, None, None,
                          None)


def live_generation(session: Session, base_topic: str) -> int:
    pointer = session.get(db.GenerationPointer, base_topic)
    return pointer.live_generation if pointer is not None else FIRST


class Generations:
    """The generations of one base topic, read through a session factory on the migrated history database."""

    def __init__(self, sessions, base_topic: str) -> None:
        self.sessions, self.base_topic = sessions, base_topic

    def live(self) -> int:
        """The live generation's number (1 until a switch)."""
        with self.sessions() as session:
            return live_generation(session, self.base_topic)

    def live_topic(self) -> str:
        return generation_topic(self.base_topic, self.live())

    def pointer(self) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.get(db.GenerationPointer, self.base_topic)
        if row is None:
            return None
        return {"live_generation": row.live_generation, "previous_generation": row.previous_generation,
                "changed_by": row.changed_by, "reason": row.reason, "changed_at": row.changed_at.isoformat()}

    def all(self) -> list[GenerationInfo]:
        """Every generation, oldest first (generation 1 included even when nothing recorded it yet)."""
        with self.sessions() as session:
            live = live_generation(session, self.base_topic)
            rows = session.scalars(select(db.Generation).where(db.Generation.base_topic == self.base_topic)
                                   .order_by(db.Generation.generation)).all()
        out = [_info(r) for r in rows]
        if not out or out[0].generation != FIRST:
            out.insert(0, _first(self.base_topic, live == FIRST))
        return out

    def get(self, generation: int) -> GenerationInfo:
        """Raises LifecycleError when there is no such generation."""
        found = next((g for g in self.all() if g.generation == int(generation)), None)
        if found is None:
            raise LifecycleError(f"topic {self.base_topic!r} has no generation {generation}; "
                                 "`python -m include generations list` shows them")
        return found

    def lineage(self, model_name: str, generation: int | None = None) -> tuple[str, int]:
        """``model_name``'s lineage to follow in ``generation`` (default: the live one) and the generation it lives in:
        the generation's own lineage when it was rebuilt for ``model_name``, else ``model_name`` in generation 1."""
        info = self.get(generation if generation is not None else self.live())
        own = info.lineage_of(model_name)
        return (own, info.generation) if own is not None else (model_name, FIRST)

    def following(self) -> list[GenerationInfo]:
        """Generations besides the live one that new files must also go to: the standby ones (for switching back)."""
        return [g for g in self.all() if g.status == "standby"]


def live_training(settings: Settings, model_name: str) -> tuple[Settings, str]:
    """What ``train_model`` trains for ``model_name`` now: the settings of its lineage's generation (the live one when
    it was rebuilt for ``model_name``, else generation 1) and the lineage's model name."""
    lineage, generation = Generations(db.session_factory(settings.db_url), settings.topic).lineage(model_name)
    return generation_settings(settings, generation), lineage


def served(sessions, base_topic: str, model_name: str) -> tuple[str, int | None]:
    """The lineage serving ``model_name`` now and its champion version (None before it has one).

    Primary-key reads in one session: cheap enough to poll every few hundred milliseconds. The switch changes the
    generation pointer and the new lineage's champion in one transaction, so the pair read here is consistent.
    """
    with sessions() as session:
        generation = live_generation(session, base_topic)
        lineage = model_name
        if generation != FIRST:
            row = session.get(db.Generation, (base_topic, generation))
            if row is not None and row.model_name == model_name and row.lineage:
                lineage = row.lineage
        pointer = session.get(db.ModelPointer, lineage)
        return lineage, pointer.champion_version if pointer is not None else None


def ensure_first(session: Session, base_topic: str, *, actor: str) -> int:
    """Record generation 1 and the pointer if nothing recorded them yet (inside the caller's transaction); the live
    generation."""
    pointer = session.get(db.GenerationPointer, base_topic)
    now = db.utcnow()
    if session.get(db.Generation, (base_topic, FIRST)) is None:
        live = pointer.live_generation if pointer is not None else FIRST
        session.add(db.Generation(base_topic=base_topic, generation=FIRST, topic=base_topic, model_name=None,
                                  lineage=None, status="live" if live == FIRST else "standby", rebuild_id=None,
                                  created_at=now, changed_at=now))
    if pointer is None:
        session.add(db.GenerationPointer(base_topic=base_topic, live_generation=FIRST, previous_generation=None,
                                         changed_by=actor, reason="the first generation", changed_at=now))
        session.flush()
        return FIRST
    return pointer.live_generation


def next_generation(session: Session, base_topic: str) -> int:
    return int(session.scalar(select(func.max(db.Generation.generation))
                              .where(db.Generation.base_topic == base_topic)) or FIRST) + 1


@dataclass(frozen=True)
class SwitchResult:
    base_topic: str
    from_generation: int
    to_generation: int
    lineage: str
    champion_version: int
    retired: tuple[int, ...]  # generations retired by this switch (their topics are deleted after the commit)
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def switch(sessions, base_topic: str, to_generation: int, model_name: str, *, actor: str, reason: str,
           champion_version: int | None = None, rebuild_id: int | None = None, gate: dict[str, Any] | None = None,
           keep: int = 1) -> SwitchResult:
    """Make ``to_generation`` live, in one transaction (see the module docstring).

    Args:
        sessions: Session factory on the history database.
        base_topic: The base topic (``RETRAIN_TOPIC``).
        to_generation: The generation to make live (``live``, ``standby`` or ``rebuilding``).
        model_name: The model name whose lineage in that generation must have a champion after the switch.
        actor: Who (``gate``, a user name).
        reason: Why (recorded).
        champion_version: Make this version of the lineage its champion in the same transaction (the rebuild's
            judged version); None: the lineage's champion stays (switching back).
        rebuild_id: The rebuild this switch decides (its state becomes ``switched``).
        gate: The gate's numbers, recorded with the rebuild and the promotion.
        keep: Earlier generations kept as ``standby`` (``RETRAIN_KEEP_GENERATIONS``); older ones are retired.

    Raises:
        LifecycleError: No such generation, it is retired or rejected, or its lineage would have no champion.
    """
    faults.reached("generation_before_switch")
    with sessions.begin() as session:
        current = ensure_first(session, base_topic, actor=actor)
        pointer = session.execute(select(db.GenerationPointer).where(db.GenerationPointer.base_topic == base_topic)
                                  .with_for_update()).scalar_one()
        current = pointer.live_generation
        target = session.get(db.Generation, (base_topic, int(to_generation)))
        if target is None:
            raise LifecycleError(f"topic {base_topic!r} has no generation {to_generation}; "
                                 "`python -m include generations list` shows them")
        if target.status not in SWITCHABLE:
            raise LifecycleError(f"generation {to_generation} of {base_topic!r} is {target.status}: "
                                 "it cannot be made live")
        lineage = lineage_name(model_name, target.generation) if target.generation != FIRST else model_name
        if target.generation != FIRST and target.model_name != model_name:
            raise LifecycleError(f"generation {to_generation} of {base_topic!r} was rebuilt for model "
                                 f"{target.model_name!r}, not {model_name!r}")
        now = db.utcnow()
        if champion_version is not None:
            _make_champion(session, lineage, int(champion_version), actor=actor, reason=reason, gate=gate, now=now,
                           event_key=f"rebuild:{rebuild_id}:promoted:{champion_version}" if rebuild_id else None)
        model_pointer = session.get(db.ModelPointer, lineage)
        if model_pointer is None or model_pointer.champion_version is None:
            raise LifecycleError(f"lineage {lineage!r} has no champion: generation {to_generation} cannot be served")
        changed = current != target.generation
        if changed:
            old = session.get(db.Generation, (base_topic, current))
            if old is not None and old.status == "live":
                old.status, old.changed_at = "standby", now
            target.status, target.changed_at = "live", now
            pointer.previous_generation, pointer.live_generation = current, target.generation
            pointer.changed_by, pointer.reason, pointer.changed_at = actor, reason, now
            details = {"from_generation": current, "to_generation": target.generation, "rebuild_id": rebuild_id,
                       **({"gate": gate} if gate else {})}
            key = f"rebuild:{rebuild_id}" if rebuild_id else f"{current}->{target.generation}:{now.isoformat()}"
            old_lineage = _lineage_in(session, base_topic, current, model_name)
            session.add(db.ModelEvent(model_name=lineage, event_key=f"generation_live:{key}",
                                      version=model_pointer.champion_version, action="generation_live", actor=actor,
                                      reason=reason, details=details, created_at=now))
            if old_lineage != lineage:
                old_pointer = session.get(db.ModelPointer, old_lineage)
                session.add(db.ModelEvent(model_name=old_lineage, event_key=f"generation_standby:{key}",
                                          version=old_pointer.champion_version if old_pointer else None,
                                          action="generation_standby", actor=actor, reason=reason, details=details,
                                          created_at=now))
        if rebuild_id is not None:
            rebuild = session.get(db.Rebuild, int(rebuild_id))
            if rebuild is not None and rebuild.state != "switched":
                rebuild.state, rebuild.active_key, rebuild.decision = "switched", None, "switch"
                rebuild.decision_reason, rebuild.gate, rebuild.candidate_version = reason, gate, champion_version
                rebuild.decided_at = rebuild.updated_at = now
                rebuild.message = f"generation {target.generation} is live"
        retired = mark_retired(session, base_topic, keep=keep, now=now) if changed else ()
        version = model_pointer.champion_version
    faults.reached("generation_after_switch")
    if changed:
        log.info("topic %s: generation %d -> %d live (lineage %s, champion version %d; %s by %s)", base_topic, current,
                 target.generation, lineage, version, reason, actor)
    return SwitchResult(base_topic, current, int(to_generation), lineage, int(version), tuple(retired), changed)


def _lineage_in(session: Session, base_topic: str, generation: int, model_name: str) -> str:
    if generation == FIRST:
        return model_name
    row = session.get(db.Generation, (base_topic, generation))
    return row.lineage if row is not None and row.model_name == model_name and row.lineage else model_name


def _make_champion(session: Session, lineage: str, version: int, *, actor: str, reason: str,
                   gate: dict[str, Any] | None, now: datetime, event_key: str | None) -> None:
    """The lineage's pointer and versions' statuses, as :func:`include.lifecycle.promotion.promote` changes them."""
    row = session.get(db.ModelVersion, (lineage, version))
    if row is None:
        raise LifecycleError(f"lineage {lineage!r} has no version {version}")
    if row.files_removed_at is not None:
        raise LifecycleError(f"version {version} of {lineage!r} is no longer on disk: it cannot be served")
    pointer = session.execute(select(db.ModelPointer).where(db.ModelPointer.model_name == lineage)
                              .with_for_update()).scalar_one_or_none()
    current = pointer.champion_version if pointer is not None else None
    if current == version:
        return
    if current is not None:
        old = session.get(db.ModelVersion, (lineage, current))
        if old is not None:
            old.status = "retired"
    row.status, row.decided_at, row.reason = "champion", now, reason
    if gate is not None:
        row.gate = gate
    if pointer is None:
        session.add(db.ModelPointer(model_name=lineage, champion_version=version, previous_version=None,
                                    changed_by=actor, reason=reason, changed_at=now))
    else:
        pointer.previous_version, pointer.champion_version = current, version
        pointer.changed_by, pointer.reason, pointer.changed_at = actor, reason, now
    key = event_key or f"promoted:{version}:from:{current}:{now.isoformat()}"
    session.add(db.ModelEvent(model_name=lineage, event_key=key, version=version, action="promoted", actor=actor, reason=reason,
                              details={"from_version": current, **({"gate": gate} if gate else {})}, created_at=now))
    session.flush()


def mark_retired(session: Session, base_topic: str, *, keep: int, now: datetime | None = None) -> list[int]:
    """Retire what retention does not keep (inside the caller's transaction); the generations retired.

    Kept: the live generation, rebuilding ones, and the ``keep`` newest standby generations. Rejected generations are
    retired once a newer generation exists (a newer rebuild started or switched). Retired rows stay; their topics are
    deleted by :func:`include.rebuild.retention.delete_retired_topics` after the commit.
    """
    now = now or db.utcnow()
    rows = session.scalars(select(db.Generation).where(db.Generation.base_topic == base_topic)
                           .order_by(db.Generation.generation.desc())).all()
    newest = rows[0].generation if rows else FIRST
    standby = [r for r in rows if r.status == "standby"]
    retire = standby[keep:] + [r for r in rows if r.status == "rejected" and r.generation < newest]
    for row in retire:
        row.status, row.retired_at, row.changed_at = "retired", now, now
    return sorted(r.generation for r in retire)
