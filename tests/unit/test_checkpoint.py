"""Atomic checkpoint bundles (include.training.checkpoint)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from include.training.checkpoint import CheckpointStore  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]


class FakeModel:
    """Stands in for a Keras model where only the bytes matter (no TensorFlow needed)."""

    def __init__(self, payload: bytes = b"fake model") -> None:
        self.payload = payload

    def save(self, path) -> None:
        Path(path).write_bytes(self.payload)


def learner_state(k: int = 0) -> dict:
    return {
        "version": 1,
        "window_x": np.arange(12, dtype=np.float32).reshape(4, 3) + k,
        "window_count": 4,
        "config": {"mode": "seed", "learning_rate": None},
        "batches_seen": k,
    }


def meta(k: int = 0) -> dict:
    return {
        "schema_id": "blog-drift-v2",
        "topic": "drone-observations",
        "offsets": {0: 100 * k, 1: 7},
        "counters": {"rows": 100 * k, "bad": 0},
        "created_at": f"2026-01-05T13:00:{k:02d}Z",
    }


@pytest.fixture(scope="module")
def real_model():
    from include.training.decode import raw_layout, raw_width
    from include.training.model import build_model
    from include.schema import load_schema

    schema = load_schema("blog_drift")
    model = build_model(schema, seed=4)
    x = np.random.default_rng(0).integers(1, 20, (64, raw_width(schema))).astype(np.float32)
    c2_x = [name for name, _, _ in raw_layout(schema)].index("c2_x")
    model.fit(x, (x[:, c2_x] > 10).astype(np.float32), batch_size=32, epochs=1, verbose=0)
    return model


def test_save_writes_one_complete_bundle(tmp_path):
    store = CheckpointStore(tmp_path)
    info = store.save(FakeModel(), learner_state(1), meta(1))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [info.path.name]
    assert re.fullmatch(r"ckpt-00000001-[0-9a-f]{32}\.bundle", info.path.name)
    assert info.seq == 1 and info.path.name.endswith(f"-{info.checkpoint_id}.bundle")
    with zipfile.ZipFile(info.path) as zf:
        assert zf.namelist() == ["model.keras", "state.npz", "meta.json"]
        saved = json.loads(zf.read("meta.json"))
        assert zf.read("model.keras") == b"fake model"
    assert saved["checkpoint_id"] == info.checkpoint_id and saved["seq"] == 1
    assert saved["offsets"] == {"0": 100, "1": 7}  # JSON object keys are strings
    assert saved["created_at"] == "2026-01-05T13:00:01Z"
    assert set(saved["sha256"]) == {"model.keras", "state.npz"}
    assert store.latest_info().meta == saved


def test_round_trip_with_real_model(tmp_path, real_model):
    store = CheckpointStore(tmp_path)
    store.save(real_model, learner_state(2), meta(2))
    loaded = store.load_latest()
    assert loaded is not None
    from include.training.decode import raw_width
    from include.schema import load_schema

    width = raw_width(load_schema("blog_drift"))
    assert real_model.input_shape == (None, width)
    x = np.random.default_rng(1).integers(1, 20, (16, width)).astype(np.float32)
    np.testing.assert_array_equal(real_model.predict(x, verbose=0), loaded.model.predict(x, verbose=0))
    assert int(loaded.model.optimizer.iterations.numpy()) == int(real_model.optimizer.iterations.numpy()) == 2
    for a, b in zip(real_model.optimizer.variables, loaded.model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    state = loaded.learner_state
    np.testing.assert_array_equal(state["window_x"], learner_state(2)["window_x"])
    assert state["window_x"].dtype == np.float32
    assert {k: v for k, v in state.items() if k != "window_x"} == {
        k: v for k, v in learner_state(2).items() if k != "window_x"}
    assert loaded.meta["counters"] == {"rows": 200, "bad": 0}


def test_keeps_last_k(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    infos = [store.save(FakeModel(), learner_state(k), meta(k)) for k in range(5)]
    assert [p.name for p in store.bundles()] == [i.path.name for i in infos[-3:]]
    assert [i.seq for i in infos] == [1, 2, 3, 4, 5]
    assert store.latest_info().checkpoint_id == infos[-1].checkpoint_id


def corrupt_member(path: Path) -> None:
    """Rewrite the bundle with a changed model member (a valid zip whose sha256 no longer matches)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["model.keras"] = members["model.keras"][:-1] + b"!"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"not a zip at all")


def bad_meta(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["meta.json"] = b"{not json"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def missing_state(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "state.npz"}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("damage", [corrupt_member, truncate, garbage, bad_meta, missing_state])
def test_damaged_newest_falls_back(tmp_path, real_model, damage, caplog):
    store = CheckpointStore(tmp_path)
    first = store.save(real_model, learner_state(1), meta(1))
    newest = store.save(real_model, learner_state(2), meta(2))
    damage(newest.path)
    with caplog.at_level(logging.WARNING, logger="include.training.checkpoint"):
        loaded = store.load_latest()
        info = store.latest_info()
    assert loaded is not None and loaded.info.checkpoint_id == first.checkpoint_id
    assert loaded.learner_state["batches_seen"] == 1
    assert info.checkpoint_id == first.checkpoint_id
    assert newest.path.name in caplog.text


def test_nothing_valid_gives_none(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_latest() is None and store.latest_info() is None
    info = store.save(FakeModel(), learner_state(), meta())
    garbage(info.path)
    assert store.load_latest() is None and store.latest_info() is None


def test_damaged_bundles_do_not_count_towards_keep(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    a = store.save(FakeModel(), learner_state(1), meta(1))
    b = store.save(FakeModel(), learner_state(2), meta(2))
    truncate(b.path)
    c = store.save(FakeModel(), learner_state(3), meta(3))
    # The damaged b is kept beside a (it does not count), so two good bundles remain.
    assert [p.name for p in store.bundles()] == [a.path.name, b.path.name, c.path.name]
    d = store.save(FakeModel(), learner_state(4), meta(4))
    assert [p.name for p in store.bundles()] == [c.path.name, d.path.name]


def test_stale_temp_file_is_ignored_and_cleaned(tmp_path):
    store = CheckpointStore(tmp_path)
    first = store.save(FakeModel(), learner_state(1), meta(1))
    stale = tmp_path / f".ckpt-00000002-{'a' * 32}.bundle.tmp"
    stale.write_bytes(b"half a bundle")
    old = time.time() - 60
    os.utime(stale, (old, old))
    assert store.latest_info().checkpoint_id == first.checkpoint_id
    assert store.bundles() == [first.path]
    fresh = tmp_path / f".ckpt-00000009-{'b' * 32}.bundle.tmp"  # another writer's, newer than our bundle: kept
    fresh.write_bytes(b"in progress")
    future = time.time() + 60
    os.utime(fresh, (future, future))
    second = store.save(FakeModel(), learner_state(2), meta(2))
    assert not stale.exists()
    assert fresh.exists()
    assert second.seq == 2


def test_fault_hook_stages_and_failure_before_rename(tmp_path):
    stages = []
    store = CheckpointStore(tmp_path, fault_hook=stages.append)
    first = store.save(FakeModel(), learner_state(1), meta(1))
    assert stages == ["after_temp_write", "after_rename"]

    def boom(stage):
        if stage == "after_temp_write":
            raise RuntimeError("injected")

    failing = CheckpointStore(tmp_path, fault_hook=boom)
    with pytest.raises(RuntimeError):
        failing.save(FakeModel(), learner_state(2), meta(2))
    assert store.bundles() == [first.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name]


def test_reserved_meta_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="set by the checkpoint store"):
        CheckpointStore(tmp_path).save(FakeModel(), learner_state(), {"seq": 5})


@pytest.mark.parametrize("stage", ["after_temp_write", "after_rename"])
def test_sigkill_during_save(tmp_path, stage):
    """A process killed mid-save leaves the previous bundle loadable (and, after the rename, the new one)."""
    store = CheckpointStore(tmp_path)
    first = store.save(FakeModel(b"one"), learner_state(1), meta(1))
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        sys.path.insert(0, {str(PROJECT)!r})
        from include.training.checkpoint import CheckpointStore
        class FakeModel:
            def save(self, path):
                open(path, "wb").write(b"two")
        def hook(stage):
            if stage == {stage!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        CheckpointStore({str(tmp_path)!r}, fault_hook=hook).save(
            FakeModel(), {{"version": 1, "a": np.zeros(3)}}, {{"created_at": "x"}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    info = store.latest_info()
    if stage == "after_temp_write":
        assert info.checkpoint_id == first.checkpoint_id
        assert len(list(tmp_path.glob(".ckpt-*.tmp"))) == 1
        store.save(FakeModel(b"three"), learner_state(3), meta(3))
        assert list(tmp_path.glob(".ckpt-*.tmp")) == []
    else:
        assert info.seq == 2
        assert list(tmp_path.glob(".ckpt-*.tmp")) == []
