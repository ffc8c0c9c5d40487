"""The landing folder's conventions: which files belong to a data interval, what a file is, what lies beside it.

A landed file is ``<anything>YYYY-MM-DD<anything>.csv`` in ``RETRAIN_LANDING_DIR`` (a local folder or an
object-storage URL); its date says which daily data interval it belongs to. It is identified by the SHA-256 of its
content. A ``.meta.json`` sidecar beside it (written by the demo generator) may say what is known about its rows,
such as the Bayes-optimal accuracy. This module only lists, opens and hashes; it never parses rows.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import BinaryIO

DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
HASH_CHUNK = 1 << 20


def is_url(location: str) -> bool:
    return "://" in location


def as_path(location):
    """A local Path, or an Airflow ObjectStoragePath for URLs (s3://, gs://, file://...)."""
    if not isinstance(location, str):
        return location
    if is_url(location):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location)
    return Path(location)


def file_date(name: str) -> date | None:
    """The date in a file's name, or None."""
    match = DATE_IN_NAME.search(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def list_interval_files(landing: str, start: datetime | None, end: datetime | None) -> list:
    """CSV files in ``landing`` whose name's date falls in [start, end), in date then name order.

    With no interval (a manual run), every dated file is returned; already ingested ones are skipped later
    by the ledger, so this is safe.
    """
    root = as_path(landing)
    if not root.exists():
        return []
    found = []
    for entry in root.iterdir():
        if not entry.name.endswith(".csv") or entry.name.startswith("."):
            continue
        day = file_date(entry.name)
        if day is None:
            continue
        if start is not None and end is not None and start != end:
            # A file dated D holds observations of [D 00:00, D+1 00:00) UTC; it belongs to the interval
            # that contains its start.
            if not (start <= datetime(day.year, day.month, day.day, tzinfo=timezone.utc) < end):
                continue
        found.append((day, entry.name, entry))
    return [entry for _, _, entry in sorted(found, key=lambda t: (t[0], t[1]))]


def open_binary(path) -> BinaryIO:
    return path.open("rb")


def content_sha256(path) -> tuple[str, int]:
    """The SHA-256 of a file's content and its size in bytes."""
    digest, size = hashlib.sha256(), 0
    with open_binary(path) as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class HashingReader:
    """Wraps a binary file: hashes what is read, so a file that changes while being read is caught."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data

    def read_to_end(self) -> str:
        """Read (and hash) whatever is left; the hex digest of the whole file."""
        while self.read(HASH_CHUNK):
            pass
        return self.digest.hexdigest()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


def sidecar_path(csv_path: Path | str) -> Path:
    """The ``.meta.json`` sidecar beside a landed file (a ``.meta.json`` path is returned as is)."""
    path = Path(csv_path)
    if path.name.endswith(".meta.json"):
        return path
    return path.with_name(path.name.removesuffix(".csv") + ".meta.json")
