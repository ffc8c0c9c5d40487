"""Pruning version folders: keep the newest ``RETRAIN_KEEP_VERSIONS``, the champion and the one before it.

:func:`prune_versions` deletes the folders of older versions and sets their ``files_removed_at``; the rows stay,
so the history of what was trained and served never changes. The champion and the pointer's ``previous_version``
(what a rollback serves) are never pruned, whatever their age. The row is marked before the folder is deleted, so
a crash in between leaves a marked row and a folder the next prune deletes; never a row that claims files that are
gone. Never changes a status or the pointer.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from include.history import db
from include.lifecycle.registry import Registry

log = logging.getLogger(__name__)


def prune_versions(registry: Registry, model_name: str, *, keep: int) -> list[int]:
    """Remove the folders of versions beyond the ``keep`` newest (never the champion or the previous champion).

    Returns:
        The versions whose folders were removed by this call.
    """
    with registry.sessions.begin() as session:
        pointer = session.get(db.ModelPointer, model_name)
        protected = {pointer.champion_version, pointer.previous_version} if pointer is not None else set()
        rows = session.scalars(select(db.ModelVersion).where(db.ModelVersion.model_name == model_name)
                               .order_by(db.ModelVersion.version.desc())).all()
        doomed = [r for r in rows[keep:] if r.version not in protected and r.files_removed_at is None]
        now = db.utcnow()
        for row in doomed:
            row.files_removed_at = now
        removed = [r.version for r in doomed]
        marked = [r.version for r in rows if r.files_removed_at is not None]
    store = registry.store(model_name)
    for version in marked:  # includes folders a crash left after their row was marked
        if store.version_dir(version).exists():
            store.remove(version)
    if removed:
        log.info("model %s: removed the folders of versions %s (kept the newest %d, the champion and the previous one)",
                 model_name, removed, keep)
    return removed
