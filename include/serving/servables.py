"""What one model name serves: its champion (followed) and the specific versions asked for by number.

:class:`Servable` pairs a :class:`include.serving.follower.ChampionFollower` with a small cache of other versions:
``/versions/<v>`` requests load version ``v`` on first use (in a worker thread, never on the event loop) and keep
the ``keep`` most recently used. Any version whose files are on disk can be asked for; the registry decides what
exists. This module never changes the registry.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

from include.lifecycle.registry import Registry
from include.serving.follower import ChampionFollower, load_version
from include.serving.model import LoadedModel


class Servable:
    """One model name's servable versions.

    Args:
        registry: The registry.
        model_name: The model name.
        schema_id: The schema requests are decoded with (versions of another schema are refused).
        interval_s: How often the champion pointer is read.
        keep: How many non-champion versions stay loaded.
    """

    def __init__(self, registry: Registry, model_name: str, schema_id: str, *, interval_s: float = 0.2,
                 keep: int = 2) -> None:
        self.registry = registry
        self.model_name = model_name
        self._load = functools.partial(load_version, schema_id=schema_id)
        self.follower = ChampionFollower(registry, model_name, interval_s=interval_s, loader=self._load)
        self.keep = keep
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def champion(self) -> LoadedModel | None:
        """The model serving as champion now (read once per request)."""
        return self.follower.current

    def lineage(self) -> str:
        """The lineage that serves the model name now (its live generation's): version numbers are its own."""
        return self.registry.served(self.model_name)[0]

    def version(self, version: int) -> LoadedModel:
        """Version ``version`` of the serving lineage, loaded if needed (blocking: call it from a worker thread).

        Raises:
            LifecycleError: No such version, or its files were pruned.
        """
        lineage = self.lineage()
        champion = self.follower.current
        if champion is not None and champion.version == version and getattr(champion, "model_name", lineage) == lineage:
            return champion
        key = (lineage, version)
        with self._lock:  # one load at a time: two requests for a new version load it once
            model = self._cache.get(key)
            if model is None:
                model = self._load(self.registry, lineage, version)
                self._cache[key] = model
                while len(self._cache) > self.keep:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return model

    def loaded_versions(self) -> list[int]:
        """Versions of the serving lineage loaded now: the champion first, then the cached ones, newest first."""
        champion = self.follower.current
        first = [] if champion is None else [champion.version]
        lineage = getattr(champion, "model_name", None) or self.model_name
        with self._lock:
            others = sorted((v for name, v in self._cache if name == lineage and v not in first), reverse=True)
        return first + others

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
