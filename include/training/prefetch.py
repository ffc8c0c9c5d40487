"""Reading ahead: the bounded reader's fetches come from a background thread through a bounded queue.

Owns: the trainer's reader thread. Reading then overlaps the main thread's start-up (TensorFlow's import, the
model, the compile), decoding, compiled training (which releases the GIL) and history writes. The thread only
reads ahead in memory, at most ``max_items`` fetches; it never commits an offset (offsets move only after a
checkpoint, in the main thread) and never outlives :meth:`Prefetch.close`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator


class Prefetch:
    """Iterates ``source`` (the reader's fetches) in a background thread through a bounded queue.

    An error in the thread is raised in the consumer's loop; :meth:`close` stops and joins the thread and must run
    before the reader's consumer is closed.

    Args:
        source: The fetches, e.g. :meth:`include.kafka.reader.BoundedReader.fetches`.
        max_items: Fetches read ahead at most.
        prepare: Applied to each item in the thread (e.g. decoding it, :func:`include.training.chunks.decoder`).

    Attributes:
        read_seconds: Time the thread spent getting items from ``source`` (reading), not waiting for room.
        prepare_seconds: Time the thread spent in ``prepare``.
    """

    _END = object()

    def __init__(self, source: Iterator[Any], max_items: int, prepare: Callable[[Any], Any] | None = None) -> None:
        self._source = source
        self._prepare = prepare
        self.read_seconds = 0.0
        self.prepare_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_items))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trainer-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        # Time out now and then to notice close(): a full queue nobody reads would block the thread forever.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            clock = time.perf_counter()
            for item in self._source:
                self.read_seconds += time.perf_counter() - clock
                if self._prepare is not None:
                    clock = time.perf_counter()
                    item = self._prepare(item)
                    self.prepare_seconds += time.perf_counter() - clock
                if not self._put(item):
                    break
                clock = time.perf_counter()
            else:
                self.read_seconds += time.perf_counter() - clock
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            self._error = exc
        finally:
            self._source.close()
            self._put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END:
                self._thread.join()
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop the thread and wait for it (it closes ``source``).

        Raises:
            RuntimeError: The thread did not stop within 120 s.
        """
        self._stop.set()
        self._thread.join(timeout=120)
        if self._thread.is_alive():
            raise RuntimeError("the reader thread did not stop within 120 s")
