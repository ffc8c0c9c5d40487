"""Following the champion: a background thread that swaps the served model when the registry's pointer moves.

:class:`ChampionFollower` polls :meth:`include.lifecycle.registry.Registry.served` (a few primary-key reads: the
live generation, the model's lineage in it, that lineage's champion) every ``interval_s`` (200 ms by default), so a
promotion, a rollback and a switch of generations (:mod:`include.lifecycle.generations`) are all followed alike.
When the pointer names another version, it loads that version completely and warms it up (one traced call) *before* replacing the one reference requests read, so a request either got the
old model or the new one, whole, and none waits for a load or fails during a promotion or a rollback. A request
reads :attr:`ChampionFollower.current` once and scores with that object to the end; the old model is freed when the
last request holding it is done.

A pointer that cannot be read (database unavailable) or a version that cannot be loaded (files pruned, corrupt)
leaves the current model serving; the failure is logged once and retried (a failed version after ``retry_s``).
A second after a swap, when no request holds the old model any more, the thread runs the garbage collector: a Keras
model is full of reference cycles, and left to the collector's own schedule the old versions piled up (~0.4 MB per
swap). The server freezes its start-up objects out of the collector (:mod:`include.serving.http`), so this takes
about a millisecond. This module never changes the registry.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Callable

from include.lifecycle.registry import LifecycleError, Registry
from include.serving.model import LoadedModel

log = logging.getLogger(__name__)

Loader = Callable[[Registry, str, int], LoadedModel]
COLLECT_AFTER_S = 1.0  # requests take milliseconds: a second after a swap, none holds the old model


def load_version(registry: Registry, model_name: str, version: int, *, schema_id: str | None = None) -> LoadedModel:
    """Version ``version`` of ``model_name`` loaded and warmed up, ready to answer its first request at full speed.

    Args:
        schema_id: The schema the caller decodes requests with; a version trained on another one is refused.

    Raises:
        LifecycleError: No such version, its files were pruned, or it reads another schema.
    """
    info = registry.resolve(model_name, version)
    if schema_id is not None and info.schema_id != schema_id:
        raise LifecycleError(f"version {info.version} of {model_name!r} reads schema {info.schema_id!r}, "
                             f"not {schema_id!r} (RETRAIN_SCHEMA / --schema)")
    model = LoadedModel(info.keras_path, info.version, info.model_name)
    model.warm_up()
    return model


class ChampionFollower:
    """Serves the champion of one model name, following the registry's pointer.

    Args:
        registry: Where the pointer is read.
        model_name: The model name.
        interval_s: How often the pointer is read.
        retry_s: How long a version that failed to load is left alone before it is tried again.
        loader: Loads a version (default :func:`load_version`); tests pass a fake.
    """

    def __init__(self, registry: Registry, model_name: str, *, interval_s: float = 0.2, retry_s: float = 5.0,
                 loader: Loader = load_version) -> None:
        self.registry = registry
        self.model_name = model_name
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._loader = loader
        self._current: LoadedModel | None = None
        self._failed: dict[tuple[str, int], float] = {}  # (lineage, version) -> monotonic time of its last failed load
        self._key: tuple[str, int] | None = None  # the (lineage, version) serving now
        self._poll_failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._collect_at: float | None = None  # monotonic time to collect the replaced model's cycles
        self.swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        """The model serving now (None before the model name has a champion). Read it once per request."""
        return self._current

    def check(self) -> bool:
        """Read the pointer once; load and swap in the version it names if that is not the one serving.

        Returns:
            Whether the served model changed.
        """
        try:
            lineage, wanted = self.registry.served(self.model_name)
        except Exception as exc:  # noqa: BLE001 - the database may be down for a while: keep serving
            if not self._poll_failing:
                log.warning("model %s: cannot read the champion pointer (%s); still serving %s", self.model_name,
                            exc, self._version_text())
            self._poll_failing = True
            return False
        self._poll_failing = False
        current = self._current
        key = (lineage, wanted)
        if wanted is None or (current is not None and self._key == key):
            return False
        failed_at = self._failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_s:
            return False
        started = time.perf_counter()
        try:
            model = self._loader(self.registry, lineage, wanted)
        except Exception as exc:  # noqa: BLE001 - a bad version must not stop the one serving
            if failed_at is None:
                log.error("model %s: cannot load version %d of %s (%s); still serving %s", self.model_name, wanted,
                          lineage, exc, self._version_text())
            self._failed[key] = time.monotonic()
            return False
        self._failed.pop(key, None)
        self._current, self._key = model, key  # the swap: one reference assignment, atomic for every reader
        self.swaps += 1
        if self._collect_at is None:  # swaps in quick succession: collect a second after the first one
            self._collect_at = time.monotonic() + COLLECT_AFTER_S
        log.info("model %s: now serving version %d of %s (was %s; loaded in %.0f ms)", self.model_name, wanted, lineage,
                 "none" if current is None else current.version, (time.perf_counter() - started) * 1000)
        return True

    def start(self) -> None:
        """Load the champion now (so the first request is served), then follow the pointer in a daemon thread."""
        self.check()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"champion-{self.model_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
            if self._collect_at is not None and time.monotonic() >= self._collect_at:
                self._collect_at = None
                gc.collect()

    def _version_text(self) -> str:
        return "nothing" if self._current is None else f"version {self._current.version}"
