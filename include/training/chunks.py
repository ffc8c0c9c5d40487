"""The fetched messages waiting to be trained, and cutting the next chunk from them.

Owns :class:`Pending`: the fetches (:class:`include.kafka.records.Records`), each with its decoded rows when the
reader thread decoded it already (:class:`Fetched`), and :meth:`Pending.take`, which cuts exactly the next chunk
(its first ``limit`` messages, the rest kept for the next one) with its rows. Decoding a message does not depend on
the messages around it, so rows decoded a fetch at a time are the rows a chunk decoded at once would give, and an
error's message index is shifted to the chunk. Never trains, never dead-letters, never reads Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from include.kafka.records import Records
from include.schema import CsvSchema
from include.training.decode import Decoded, decode_batch


@dataclass
class Fetched:
    """A fetch and its decoded rows (None: not decoded yet)."""

    records: Records
    decoded: Decoded | None = None


def decoder(schema: CsvSchema) -> Callable[[Records], Fetched]:
    """Decodes a fetch (for the reader thread: :class:`include.training.prefetch.Prefetch`'s ``prepare``)."""
    return lambda records: Fetched(records, decode_batch(schema, records.values))


class Pending:
    """Fetches waiting to be trained, in order."""

    def __init__(self, schema: CsvSchema) -> None:
        self.schema = schema
        self.parts: list[Fetched] = []
        self.messages = 0

    def add(self, item: Records | Fetched) -> None:
        part = item if isinstance(item, Fetched) else Fetched(item)
        if len(part.records):
            self.parts.append(part)
            self.messages += len(part.records)

    def sizes(self) -> list[int]:
        return [len(p.records) for p in self.parts]

    def take(self, limit: int | None = None) -> tuple[Records, Decoded]:
        """The first ``limit`` pending messages (all by default) and their decoded rows; the rest stays."""
        parts, self.parts = self.parts, []
        records = Records.concat([p.records for p in parts])
        if all(p.decoded is None for p in parts):
            decoded = decode_batch(self.schema, records.values)
        else:
            decoded = _concat([p.decoded or decode_batch(self.schema, p.records.values) for p in parts],
                              [len(p.records) for p in parts])
        take = len(records) if limit is None else min(limit, len(records))
        self.messages = len(records) - take
        if take == len(records):
            return records, decoded
        head, tail = _split(decoded, take)
        self.parts = [Fetched(records.slice(take, len(records)), tail)]
        return records.slice(0, take), head


def _concat(parts: list[Decoded], lengths: list[int]) -> Decoded:
    """The decoded rows of consecutive fetches as one, message indices shifted."""
    if len(parts) == 1:
        return parts[0]
    starts = np.cumsum([0] + lengths[:-1])
    return Decoded(x=np.concatenate([d.x for d in parts]), y=np.concatenate([d.y for d in parts]),
                   good=np.concatenate([d.good + s for d, s in zip(parts, starts.tolist())]),
                   errors=[(i + s, reason) for d, s in zip(parts, starts.tolist()) for i, reason in d.errors])


def _split(decoded: Decoded, at: int) -> tuple[Decoded, Decoded]:
    """The rows of messages before ``at`` and those from ``at`` on (indices counted from ``at``)."""
    k = int(np.searchsorted(decoded.good, at))
    return (Decoded(decoded.x[:k], decoded.y[:k], decoded.good[:k], [e for e in decoded.errors if e[0] < at]),
            Decoded(decoded.x[k:], decoded.y[k:], decoded.good[k:] - at,
                    [(i - at, reason) for i, reason in decoded.errors if i >= at]))


__all__ = ["Fetched", "Pending", "decoder"]
