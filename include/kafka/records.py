"""Messages read from Kafka, one column per field: what the reader hands over per fetch.

Owns :class:`Records` (values as a list of bytes, partitions, offsets and timestamps as numpy arrays) and
:class:`Message` (one record as an object, made only where one is needed: a dead letter, a caller that wants them).
A trainer that keeps up with a topic cannot afford a Python object per message; with columns, cutting mini-batches,
their offsets and event times are numpy work per fetch. Never talks to Kafka and never decodes a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

NO_OFFSET = -1  # an offset the reader cannot see (tensorflow-io's)


@dataclass
class Message:
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None


@dataclass
class Records:
    """Messages in consumption order, column by column.

    Attributes:
        values: The values (bytes, or None for a tombstone).
        partitions: int32 partition of each message.
        offsets: int64 offset of each message (:data:`NO_OFFSET` where it is not known).
        timestamps: int64 timestamp in epoch ms (0 where ``timed`` is False).
        timed: Whether the message has a timestamp.
    """

    values: list[Any]
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    timed: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def empty(cls) -> "Records":
        return cls([], np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    @classmethod
    def of(cls, values: list[Any], partitions: Sequence[int], offsets: Sequence[int],
           timestamps: Sequence[int | None] | None = None) -> "Records":
        """Records from plain columns; ``timestamps`` None (or a None in it): no timestamp."""
        n = len(values)
        stamps = [None] * n if timestamps is None else list(timestamps)
        timed = np.fromiter((t is not None for t in stamps), bool, n)
        return cls(values, np.asarray(partitions, np.int32).reshape(n), np.asarray(offsets, np.int64).reshape(n),
                   np.fromiter((t or 0 for t in stamps), np.int64, n), timed)

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> "Records":
        return cls.of([m.value for m in messages], [m.partition for m in messages], [m.offset for m in messages],
                      [m.timestamp_ms for m in messages])

    @classmethod
    def concat(cls, parts: Sequence["Records"]) -> "Records":
        """The records of ``parts``, one after the other."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        values: list[Any] = []
        for part in parts:
            values.extend(part.values)
        return cls(values, np.concatenate([p.partitions for p in parts]), np.concatenate([p.offsets for p in parts]),
                   np.concatenate([p.timestamps for p in parts]), np.concatenate([p.timed for p in parts]))

    def slice(self, start: int, stop: int) -> "Records":
        return Records(self.values[start:stop], self.partitions[start:stop], self.offsets[start:stop],
                       self.timestamps[start:stop], self.timed[start:stop])

    def message(self, i: int) -> Message:
        """Record ``i`` as a :class:`Message`."""
        return Message(int(self.partitions[i]), int(self.offsets[i]), self.values[i],
                       int(self.timestamps[i]) if self.timed[i] else None)

    def messages(self) -> list[Message]:
        return [self.message(i) for i in range(len(self))]

    def next_offsets(self) -> dict[int, int]:
        """One past the highest known offset of every partition present (partitions with no known offset left out)."""
        known = self.offsets >= 0
        out: dict[int, int] = {}
        for p in np.unique(self.partitions[known]).tolist():
            out[p] = int(self.offsets[known & (self.partitions == p)].max()) + 1
        return out


__all__ = ["Message", "NO_OFFSET", "Records"]
