"""What the demo generator's sidecar files say about the data in a topic: Bayes-optimal accuracy and drift.

Known only for landed files with a ``.meta.json`` sidecar that says it (the demo generator writes them; see
:func:`include.ingest.landing.sidecar_path`): the Bayes-optimal accuracy (the best any model could do, drawn as a
line on the chart) and whether the file's rows follow the drifted rule. Read-only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from include.history import db
from include.ingest.landing import is_url, sidecar_path


@dataclass(frozen=True)
class LandedFile:
    """A committed file of the ingest ledger with its sidecar's facts (ledger order is topic order)."""

    name: str
    file_date: str | None
    rows: int
    bayes_accuracy: float
    drift: bool | None


@lru_cache(maxsize=4096)
def _read_sidecar(path: str, mtime_ns: int, size: int) -> tuple[float, int, bool | None] | None:
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        drift = meta.get("drift")
        return float(meta["bayes_accuracy"]), int(meta["rows"]), drift if isinstance(drift, bool) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def landed_files(session: Session, topic: str) -> list[LandedFile] | None:
    """The committed files (with rows) of ``topic`` in ledger order, with their sidecar facts.

    None unless every one of them has a readable sidecar, since a partial answer would be a wrong line on the chart.
    """
    rows = session.execute(
        select(db.IngestedFile.file_name, db.IngestedFile.file_date, db.IngestedFile.rows_valid).where(
            db.IngestedFile.topic == topic, db.IngestedFile.status == "committed", db.IngestedFile.rows_valid > 0
        ).order_by(db.IngestedFile.id)
    ).all()
    if not rows:
        return None
    files = []
    for name, file_date, rows_valid in rows:
        if is_url(name):
            return None  # object-storage files: sidecars are not read from the API server
        try:
            stat = sidecar_path(name).stat()
        except OSError:
            return None
        found = _read_sidecar(str(name), stat.st_mtime_ns, stat.st_size)
        if found is None:
            return None
        bayes, _, drift = found
        files.append(LandedFile(name=name, file_date=file_date, rows=int(rows_valid), bayes_accuracy=bayes, drift=drift))
    return files


def bayes_accuracy(session: Session, topic: str) -> float | None:
    """Bayes-optimal accuracy of the data on ``topic``: the row-weighted mean over its landed files (or None)."""
    files = landed_files(session, topic)
    if not files:
        return None
    total = sum(f.rows for f in files)
    return round(sum(f.rows * f.bayes_accuracy for f in files) / total, 6) if total else None


def concept_changes(files: list[LandedFile]) -> list[tuple[int, str | None]]:
    """Where the generator's rule changes: ``(records before the first changed row, that file's date)`` each."""
    changes, records, previous = [], 0, None
    for f in files:
        if previous is not None and f.drift is not None and f.drift != previous:
            changes.append((records, f.file_date))
        previous = f.drift if f.drift is not None else previous
        records += f.rows
    return changes
