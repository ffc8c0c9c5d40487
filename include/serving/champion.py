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
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self.lineage = model_name  # the lineage the current model belongs to (``<model>.gN`` after a rebuild)

    def wanted(self) -> tuple[str, int]:
        """The lineage (the model name's, in the live generation) and version that should score now.

        Raises:
            LifecycleError: Following the champion and there is none yet.
        """
        lineage, version = self.registry.served(self.model_name)
        if self.fixed is not None:
            return lineage, self.fixed
        if version is None:
            raise LifecycleError(f"model {self.model_name!r} has no champion yet: train it first "
                                 "(`python -m include train`, or the train_model DAG), or pass a version")
        return lineage, version

    def wanted_version(self) -> int:
        return self.wanted()[1]

    def current(self) -> LoadedModel:
        """The loaded model of :meth:`wanted` (loaded now if it is not in memory)."""
        key = self.wanted()
        model = self._loaded.get(key)
        if model is None:
            info = self.registry.resolve(*key)
            model = LoadedModel(info.keras_path, info.version, info.model_name)
            self._loaded[key] = model
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            log.info("scoring with %s version %d (%s)", key[0], key[1],
                     "fixed" if self.fixed is not None else "the champion")
        else:
            self._loaded.move_to_end(key)
        self.lineage = key[0]
        return model
