"""The Bayes-optimal accuracy of the data in a topic: the best any model could do, drawn as a line on the chart.

Known only for landed files with a ``.meta.json`` sidecar that says it (the demo generator writes them; see
:func:`include.ingest.landing.sidecar_path`). Read-only."""

from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from include.history import db
from include.ingest.landing import is_url, sidecar_path


@lru_cache(maxsize=4096)
def _read_sidecar(path: str, mtime_ns: int, size: int) -> tuple[float, int] | None:
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        return float(meta["bayes_accuracy"]), int(meta["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bayes_accuracy(session: Session, topic: str) -> float | None:
    """Bayes-optimal accuracy of the data on ``topic``, from the generator's ``.meta.json`` sidecars.

    The row-weighted mean over the committed files of the ingest ledger; None unless every one of them
    (with rows) has a readable sidecar, since a partial answer would be a wrong line on the chart.
    """
    names = session.scalars(
        select(db.IngestedFile.file_name).where(
            db.IngestedFile.topic == topic, db.IngestedFile.status == "committed", db.IngestedFile.rows_valid > 0
        )
    ).all()
    if not names:
        return None
    total = weighted = 0.0
    for name in names:
        if is_url(name):
            return None  # object-storage files: sidecars are not read from the API server
        sidecar = sidecar_path(name)
        try:
            stat = sidecar.stat()
        except OSError:
            return None
        found = _read_sidecar(str(name), stat.st_mtime_ns, stat.st_size)
        if found is None:
            return None
        bayes, rows = found
        total += rows
        weighted += rows * bayes
    return round(weighted / total, 6) if total else None
