"""Which loaded model scores next: a fixed version, or the champion as the registry says at that moment.

:class:`ModelChoice` is asked between units of work (the streaming scorer asks before each transaction), reads the
champion pointer (one primary-key read), and loads a version the first time it is needed, keeping the few most
recently used loaded so a rollback back and forth does not reload. It never changes the registry.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from include.lifecycle.registry import LifecycleError, Registry
from include.serving.model import LoadedModel

log = logging.getLogger(__name__)


class ModelChoice:
    """The model to score with.

    Args:
        registry: The lifecycle registry.
        model_name: The model name.
        version: A fixed version; None follows the champion.
        keep: Loaded versions kept in memory.
    """

    def __init__(self, registry: Registry, model_name: str, version: int | None = None, *, keep: int = 2) -> None:
        self.registry = registry
        self.model_name = model_name
        self.fixed = version
        self.keep = max(1, keep)
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()

    def wanted_version(self) -> int:
        """The version that should score now.

        Raises:
            LifecycleError: Following the champion and there is none yet.
        """
        if self.fixed is not None:
            return self.fixed
        version = self.registry.champion_version(self.model_name)
        if version is None:
            raise LifecycleError(f"model {self.model_name!r} has no champion yet: train it first "
                                 "(`python -m include train`, or the train_model DAG), or pass a version")
        return version

    def current(self) -> LoadedModel:
        """The loaded model of :meth:`wanted_version` (loaded now if it is not in memory)."""
        version = self.wanted_version()
        model = self._loaded.get(version)
        if model is None:
            info = self.registry.resolve(self.model_name, version)
            model = LoadedModel(info.keras_path, info.version)
            self._loaded[version] = model
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            log.info("scoring with %s version %d (%s)", self.model_name, version,
                     "fixed" if self.fixed is not None else "the champion")
        else:
            self._loaded.move_to_end(version)
        return model
