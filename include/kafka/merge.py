"""Several partitions read as one stream whose order is a function of the log, not of fetch timing.

Owns :class:`EventTimeMerge`: the k-way merge of the partitions a run reads, by event time (the Kafka timestamp, which
ingest sets to the row's event time), then partition, then offset. Fetches arrive in whatever order the client got
them; the merge buffers them (as columns) and releases a record only once nothing still unread can come before it.

The order, precisely. Within a partition the order is always the offset order: a checkpoint stores one next offset
per partition, so what is trained of a partition must be a prefix of it. Across partitions, the next record is the
head (the oldest untrained record) with the smallest ``(event time, partition)``. A *late* record, whose event time is
older than a record before it in its own partition, is therefore trained right after that predecessor, not moved
back: it cannot overtake its partition. Computed in columns: that head-by-head merge is the same as sorting by
``(merge key, partition, offset)`` where a record's merge key is the newest event time of its partition up to it
(a running maximum, restarted where the run starts reading; :func:`merge_keys`), so a late record carries its
predecessor's time. The merge from any position depends only on the records from that position on, never on what
came before it: a run resumed at a checkpoint's offsets continues exactly the order an uninterrupted run follows.

When to release. A record of partition ``p`` with merge key ``k`` is released once every other partition ``q`` still
being read has buffered a record with merge key above ``k`` (or equal to it, when ``q > p``): ``q``'s keys never
decrease, so nothing it delivers later comes first. A partition read to its end offset seen at start (the reader's
bounded run) constrains nothing any more; once every partition is at its end, everything buffered is released. A run
that stops earlier (time, record limit, stream timeout) leaves the unreleased records untrained: the next run reads
them again from the checkpoint's offsets and merges them the same way.

Memory: a partition whose event times run ahead of the others' is buffered until they catch up, so the buffer holds
about the event-time skew between partitions. Never talks to Kafka and never decodes a value.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from include.kafka.records import Records

_BLOCKED = object()  # no record of the partition can be released yet


def merge_keys(timestamps: np.ndarray, previous: int | None = None) -> np.ndarray:
    """The merge keys of consecutive records of one partition: the running maximum of their event times (after
    ``previous``, the key of the partition's record before them in this run, if any)."""
    keys = np.maximum.accumulate(timestamps)
    if previous is not None and keys.size:
        np.maximum(keys, previous, out=keys)
    return keys


class EventTimeMerge:
    """Merges the fetches of ``partitions`` (those a run reads) into one order; see the module docstring.

    Use: :meth:`add` every fetch, :meth:`end` every partition read to its end, :meth:`release` what can go now.
    """

    def __init__(self, partitions: Iterable[int]) -> None:
        self._open = {int(p) for p in partitions}  # partitions not at their end yet
        # Per partition, the buffered records in order, in chunks: (a fetch, the rows of this partition in it, their
        # merge keys). Rows point into the fetch: no value is copied before it is released.
        self._chunks: dict[int, list[tuple[Records, np.ndarray, np.ndarray]]] = {}
        self._last: dict[int, int] = {}  # per partition: the merge key of the newest record added
        self.buffered = 0

    def add(self, records: Records) -> None:
        """A fetch, in consumption order (each partition's records in offset order)."""
        n = len(records)
        if not n:
            return
        parts = records.partitions
        if parts[0] == parts[-1] and (parts == parts[0]).all():
            groups = [(int(parts[0]), np.arange(n))]
        else:
            groups = [(p, np.flatnonzero(parts == p)) for p in np.unique(parts).tolist()]
        for p, rows in groups:
            keys = merge_keys(records.timestamps[rows], self._last.get(p))
            self._last[p] = int(keys[-1])
            self._chunks.setdefault(p, []).append((records, rows, keys))
            self.buffered += rows.size

    @property
    def open(self) -> frozenset[int]:
        """The partitions not at their end yet."""
        return frozenset(self._open)

    def end(self, partition: int) -> None:
        """``partition`` has delivered everything it will deliver in this run."""
        self._open.discard(int(partition))

    def holds(self, partition: int) -> bool:
        """Whether records of ``partition`` are buffered, not released yet."""
        return bool(self._chunks.get(int(partition)))

    def release(self, limit: int | None = None) -> Records:
        """The records that come next in the merged order and that nothing unread can precede (at most ``limit``)."""
        pieces: list[tuple[Records, np.ndarray, np.ndarray]] = []
        partitions = 0
        for p in sorted(self._chunks):
            bound = self._bound(p)
            if bound is _BLOCKED:
                continue
            taken = self._take(p, bound)
            pieces.extend(taken)
            partitions += bool(taken)
        if not pieces:
            return Records.empty()
        records, keys = _gather(pieces, reorder=partitions > 1)
        self.buffered -= len(records)
        if limit is not None and len(records) > limit:
            self._put_back(records.slice(limit, len(records)), keys[limit:])
            records = records.slice(0, limit)
        return records

    def _bound(self, p: int) -> object:
        """The largest merge key of ``p`` that can be released now (None: no bound; _BLOCKED: none can)."""
        bound = None
        for q in self._open:
            if q == p:
                continue
            last = self._last.get(q)
            if last is None:
                return _BLOCKED  # q has sent nothing yet: its first record may come before anything
            # q's later records have keys >= last; at an equal key the lower partition goes first.
            allowed = last if q > p else last - 1
            bound = allowed if bound is None else min(bound, allowed)
        return bound

    def _take(self, p: int, bound: int | None) -> list[tuple[Records, np.ndarray, np.ndarray]]:
        """The buffered chunks of ``p`` with merge key <= ``bound`` (all when None): a prefix, the last one cut."""
        chunks = self._chunks[p]
        out = []
        while chunks:
            records, rows, keys = chunks[0]
            if bound is None or keys[-1] <= bound:
                out.append(chunks.pop(0))
                continue
            cut = int(np.searchsorted(keys, bound, side="right"))
            if cut:
                out.append((records, rows[:cut], keys[:cut]))
                chunks[0] = (records, rows[cut:], keys[cut:])
            break
        if not chunks:
            del self._chunks[p]
        return out

    def _put_back(self, records: Records, keys: np.ndarray) -> None:
        """Released records that exceed the caller's limit go back to the front of their partitions' buffers."""
        for p in np.unique(records.partitions).tolist():
            mine = np.flatnonzero(records.partitions == p)
            self._chunks.setdefault(p, []).insert(0, (records, mine, keys[mine]))
        self.buffered += len(records)


def _gather(pieces: list[tuple[Records, np.ndarray, np.ndarray]], *, reorder: bool) -> tuple[Records, np.ndarray]:
    """The records of ``pieces`` (fetch, rows, keys) as one :class:`Records` with their keys, sorted by (merge key,
    partition, offset) when ``reorder`` (pieces of several partitions), else in the pieces' order.

    The values are copied once: slices of the fetches where the rows are a contiguous run and nothing is reordered
    (one partition's fetches), else one gather from the fetches' values laid end to end.
    """
    keys = np.concatenate([k for _, _, k in pieces]) if len(pieces) > 1 else pieces[0][2]
    contiguous = all(rows.size == 0 or int(rows[-1]) - int(rows[0]) + 1 == rows.size for _, rows, _ in pieces)
    if not reorder and contiguous:
        parts = [fetch.slice(int(rows[0]), int(rows[-1]) + 1) for fetch, rows, _ in pieces if rows.size]
        return Records.concat(parts), keys
    pool: list = []
    base: dict[int, int] = {}
    for fetch, _, _ in pieces:
        if id(fetch) not in base:
            base[id(fetch)] = len(pool)
            pool.extend(fetch.values)
    index = np.concatenate([rows + base[id(fetch)] for fetch, rows, _ in pieces])

    def column(name: str) -> np.ndarray:
        return np.concatenate([getattr(fetch, name)[rows] for fetch, rows, _ in pieces])

    partitions, offsets, timestamps, timed = column("partitions"), column("offsets"), column("timestamps"), column("timed")
    if reorder:
        order = np.lexsort((offsets, partitions, keys))
        index, keys = index[order], keys[order]
        partitions, offsets, timestamps, timed = partitions[order], offsets[order], timestamps[order], timed[order]
    return Records([pool[i] for i in index.tolist()], partitions, offsets, timestamps, timed), keys


__all__ = ["EventTimeMerge", "merge_keys"]
