"""The ingest ledger and the quarantine: what was ingested into which topic, and every bad row with its reason.

One ``ingest_files`` row per (topic, file content), pending -> committed | rejected, or ``waiting_for_rebuild`` for a
file older than the topic's newest data (recorded, never produced into this topic: a rebuild of the topic's next
generation takes it, see :mod:`include.rebuild`); one ``quarantined_rows`` row per (file content, line). All writes
are idempotent upserts, so a retried file never leaves two rows. The topic is a generation's topic, so the ledger is
keyed by generation.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from sqlalchemy import func, select, update

from include.history import db
from include.ingest.validate import RowError

QUARANTINE_BATCH = 2_000
WAITING = "waiting_for_rebuild"
STATUSES = ("pending", "committed", "rejected", WAITING)


class Ledger:
    """The ledger rows of one topic, through a session factory on the migrated history database."""

    def __init__(self, sessions, topic: str) -> None:
        self.sessions, self.topic = sessions, topic

    def get(self, sha: str) -> db.IngestedFile | None:
        with self.sessions() as session:
            return session.scalars(
                select(db.IngestedFile).where(db.IngestedFile.topic == self.topic,
                                              db.IngestedFile.content_sha256 == sha)
            ).first()

    def put(self, **row: Any) -> None:
        row.setdefault("updated_at", db.utcnow())
        with self.sessions.begin() as session:
            db.upsert(session, db.IngestedFile, [{"topic": self.topic, **row}], keys=("topic", "content_sha256"))

    def count_attempt(self, sha: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(db.IngestedFile)
                .where(db.IngestedFile.topic == self.topic, db.IngestedFile.content_sha256 == sha)
                .values(attempts=db.IngestedFile.attempts + 1, updated_at=db.utcnow())
            )

    def newest_date(self) -> str | None:
        """The newest file date with committed rows in this topic (ISO), or None."""
        with self.sessions() as session:
            return session.scalar(
                select(func.max(db.IngestedFile.file_date)).where(
                    db.IngestedFile.topic == self.topic, db.IngestedFile.status == "committed",
                    db.IngestedFile.rows_valid > 0,
                )
            )

    def newer_data_than(self, day: date | None) -> str | None:
        """The topic's newest file date when it is after ``day`` (the file would go behind newer data), else None.

        The model learns the stream in offset order, so a late week appended now would be learned as if it came
        after the newer ones: such a file waits for a rebuild instead (:data:`WAITING`).
        """
        newest = self.newest_date() if day is not None else None
        return newest if newest is not None and day.isoformat() < newest else None

    def files(self, *statuses: str) -> list[db.IngestedFile]:
        """The topic's files with these statuses (all when none given), in date then name order (undated last)."""
        query = select(db.IngestedFile).where(db.IngestedFile.topic == self.topic)
        if statuses:
            query = query.where(db.IngestedFile.status.in_(statuses))
        with self.sessions() as session:
            rows = list(session.scalars(query))
        return sorted(rows, key=lambda r: (r.file_date is None, r.file_date or "", r.file_name, r.id))

    def quarantine(self, sha: str, file_name: str, errors: Iterable[RowError]) -> None:
        """Record bad rows (idempotent per file content and line), in batches."""
        batch: list[dict] = []
        for err in errors:
            batch.append({"topic": self.topic, "content_sha256": sha, "file_name": file_name, "line": err.line,
                          "field": err.field, "reason": err.reason, "raw": err.raw})
            if len(batch) >= QUARANTINE_BATCH:
                self._upsert_quarantined(batch)
                batch = []
        self._upsert_quarantined(batch)

    def _upsert_quarantined(self, rows: list[dict]) -> None:
        if rows:
            with self.sessions.begin() as session:
                db.upsert(session, db.QuarantinedRow, rows, keys=("content_sha256", "line"))
