"""The champion follower's decisions with a fake registry and loader (the real ones: tests/integration/test_serve.py)."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

from include.serving import follower as champion_follower
from include.serving.follower import ChampionFollower


@dataclass
class _Model:
    version: int


class _Registry:
    def __init__(self) -> None:
        self.pointer: int | None = None
        self.down = False

    def champion_version(self, _name: str) -> int | None:
        if self.down:
            raise OSError("database unavailable")
        return self.pointer

    def served(self, name: str) -> tuple[str, int | None]:
        return name, self.champion_version(name)


class _Loader:
    def __init__(self) -> None:
        self.broken: set[int] = set()
        self.loads: list[int] = []

    def __call__(self, _registry, _name: str, version: int) -> _Model:
        self.loads.append(version)
        if version in self.broken:
            raise ValueError(f"version {version} is corrupt")
        return _Model(version)


def _follower(retry_s: float = 5.0):
    registry, loader = _Registry(), _Loader()
    return ChampionFollower(registry, "m", loader=loader, retry_s=retry_s), registry, loader


def test_nothing_to_serve_before_the_first_champion_then_its_version():
    follower, registry, loader = _follower()
    assert follower.check() is False and follower.current is None
    registry.pointer = 1
    assert follower.check() is True and follower.current.version == 1
    assert follower.check() is False and loader.loads == [1]  # an unchanged pointer loads nothing


def test_a_switch_replaces_the_model_and_a_rollback_switches_back():
    follower, registry, _ = _follower()
    registry.pointer = 1
    follower.check()
    held = follower.current  # what a request in flight holds
    registry.pointer = 2
    assert follower.check() is True and follower.current.version == 2
    assert held.version == 1  # the request in flight still scores with the model it started with
    registry.pointer = 1
    assert follower.check() is True and follower.current.version == 1 and follower.swaps == 3


def _switch_to_a_broken_version(retry_s: float):
    """Serving version 1; the pointer moves to version 2, which cannot be loaded."""
    follower, registry, loader = _follower(retry_s=retry_s)
    registry.pointer = 1
    follower.check()
    loader.broken.add(2)
    registry.pointer = 2
    return follower, loader


def test_a_version_that_cannot_be_loaded_leaves_the_current_one_serving_and_is_retried_later():
    follower, loader = _switch_to_a_broken_version(retry_s=0.0)
    assert follower.check() is False and follower.current.version == 1
    loader.broken.clear()
    assert follower.check() is True and follower.current.version == 2


def test_a_failed_version_is_not_reloaded_on_every_poll():
    follower, loader = _switch_to_a_broken_version(retry_s=3600.0)
    for _ in range(5):
        follower.check()
    assert loader.loads == [1, 2] and follower.current.version == 1


def test_an_unreadable_pointer_keeps_the_current_model():
    follower, registry, _ = _follower()
    registry.pointer = 1
    follower.check()
    registry.down = True
    assert follower.check() is False and follower.current.version == 1
    registry.down, registry.pointer = False, 2
    assert follower.check() is True and follower.current.version == 2


class _Cyclic:
    """A model with a reference cycle, as Keras models have: only the garbage collector frees it."""

    def __init__(self, version: int) -> None:
        self.version, self.me = version, self


def test_the_replaced_model_is_collected_by_the_following_thread(monkeypatch):
    monkeypatch.setattr(champion_follower, "COLLECT_AFTER_S", 0.0)
    registry = _Registry()
    registry.pointer = 1
    follower = ChampionFollower(registry, "m", interval_s=0.01, loader=lambda _r, _n, v: _Cyclic(v))
    import gc

    gc.disable()  # only the follower's own collection may free it
    try:
        follower.start()
        old = weakref.ref(follower.current)
        registry.pointer = 2
        deadline = time.monotonic() + 30
        while old() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert old() is None and follower.current.version == 2
    finally:
        follower.stop()
        gc.enable()
