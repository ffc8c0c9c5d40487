"""Atomic checkpoint bundles: the source of truth for resuming training.

One checkpoint is one file, ``ckpt-<seq:08d>-<checkpoint_id>.bundle``, a zip of three members:

- ``model.keras``: the whole Keras 3 model, optimizer state included;
- ``state.npz``: the learner's state (:meth:`include.training.learner.IncrementalLearner.get_state`), arrays as
  arrays and the JSON-able scalars as one JSON string, loadable without pickle;
- ``meta.json``: checkpoint_id, seq, the caller's facts (schema_id, topic, offsets ``{partition: next_offset}``,
  counters, created_at...) and the sha256 of the two other members.

A bundle is written to a hidden temp file in the same folder, flushed and fsynced, renamed over its final name with
``os.replace`` and the folder fsynced, so a reader sees a complete bundle or none: a crash leaves at worst a temp
file, which is ignored and cleaned by the next save. Loading checks every member against ``meta.json`` and falls
back to the previous bundle when the newest is damaged. This module never talks to Kafka or the history database;
committing offsets only after :meth:`CheckpointStore.save` returns is the caller's job.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from include.durable import fsync_dir

log = logging.getLogger(__name__)

FORMAT = "retrain-checkpoint/1"
MODEL_MEMBER = "model.keras"
STATE_MEMBER = "state.npz"
META_MEMBER = "meta.json"
_SCALARS_KEY = "__scalars__"
_BUNDLE_RE = re.compile(r"^ckpt-(\d{8})-([0-9a-f]{32})\.bundle$")
_TEMP_RE = re.compile(r"^\.ckpt-\d{8}-[0-9a-f]{32}\.bundle\.tmp$")
# Keys the store sets itself; a caller's meta may not override them.
_RESERVED = {"format", "checkpoint_id", "seq", "sha256"}


class CheckpointError(Exception):
    """A bundle is incomplete or damaged."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A bundle on disk and its meta."""

    path: Path
    seq: int
    checkpoint_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """A bundle's content, ready to resume from; the model (Keras, so TensorFlow) is loaded when first asked for."""

    info: CheckpointInfo
    learner_state: dict[str, Any]
    model_bytes: bytes = field(repr=False)
    _model: Any = field(default=None, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.meta

    @property
    def model(self) -> Any:
        """The keras.Model, compiled, optimizer state restored.

        Raises:
            CheckpointError: The model member (its checksum correct) cannot be loaded.
        """
        if self._model is None:
            try:
                self._model = _load_model(self.model_bytes)
            except Exception as exc:  # noqa: BLE001 - any failure means: this bundle's model is unusable
                raise CheckpointError(f"checkpoint {self.info.path.name}: its model cannot be loaded "
                                      f"({exc.__class__.__name__}: {exc})") from exc
        return self._model


class CheckpointStore:
    """Checkpoint bundles in one folder (one writer at a time: the trainer holding the consumer group).

    Args:
        directory: The folder (created if missing).
        keep: How many complete bundles to keep; older ones are deleted after each save.
        fault_hook: Called with ``"after_temp_write"`` (temp file durable, not yet renamed) and ``"after_rename"``
            (bundle in place, old ones not yet pruned), so fault-injection tests can kill the process there.
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3,
                 fault_hook: Callable[[str], None] | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        self.fault_hook = fault_hook
        self.directory.mkdir(parents=True, exist_ok=True)

    # --- writing ---------------------------------------------------------------------------------------------

    def save(self, model: Any, learner_state: Mapping[str, Any], meta: Mapping[str, Any]) -> CheckpointInfo:
        """Write a new bundle atomically, then prune old bundles and stale temp files.

        Args:
            model: The Keras model (saved whole, optimizer included).
            learner_state: numpy arrays and JSON-able scalars.
            meta: JSON-able facts to record (schema_id, topic, offsets, counters, created_at...). They round-trip
                through JSON, so integer keys (e.g. offsets' partitions) come back as strings.

        Returns:
            The new bundle's info.
        """
        clash = _RESERVED & set(meta)
        if clash:
            raise ValueError(f"meta keys {sorted(clash)} are set by the checkpoint store")
        seq = max((s for s, _, _ in self._bundle_names()), default=0) + 1
        checkpoint_id = uuid.uuid4().hex
        members = {MODEL_MEMBER: _model_bytes(model), STATE_MEMBER: _state_bytes(learner_state)}
        full_meta = {
            "format": FORMAT,
            "checkpoint_id": checkpoint_id,
            "seq": seq,
            **{k: _jsonable(v) for k, v in meta.items()},
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
        }
        # No indent: with one, json falls back to its pure-Python encoder, ~0.4 s for the 5,000 history rows a
        # checkpoint may carry (the C encoder takes a tenth of that).
        members[META_MEMBER] = json.dumps(full_meta, sort_keys=True).encode("utf-8")

        name = f"ckpt-{seq:08d}-{checkpoint_id}.bundle"
        final = self.directory / name
        temp = self.directory / f".{name}.tmp"
        try:
            with open(temp, "wb") as fh:
                with zipfile.ZipFile(fh, "w") as zf:
                    # model.keras is a zip already; meta goes last.
                    zf.writestr(MODEL_MEMBER, members[MODEL_MEMBER], compress_type=zipfile.ZIP_STORED)
                    zf.writestr(STATE_MEMBER, members[STATE_MEMBER], compress_type=zipfile.ZIP_DEFLATED)
                    zf.writestr(META_MEMBER, members[META_MEMBER], compress_type=zipfile.ZIP_DEFLATED)
                fh.flush()
                os.fsync(fh.fileno())
            self._hook("after_temp_write")
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(self.directory)
        self._hook("after_rename")
        info = CheckpointInfo(path=final, seq=seq, checkpoint_id=checkpoint_id, meta=full_meta)
        self._prune(final)
        log.info("checkpoint %s saved (seq %d, %d bytes)", final.name, seq, final.stat().st_size)
        return info

    # --- reading ---------------------------------------------------------------------------------------------

    def latest_info(self) -> CheckpointInfo | None:
        """The newest valid bundle's info (members checked, model not loaded), or None."""
        for seq, checkpoint_id, path in reversed(self._bundle_names()):
            try:
                meta, _ = _read_bundle(path, seq, checkpoint_id)
            except (CheckpointError, OSError) as exc:
                log.warning("skipping checkpoint %s: %s", path.name, exc)
                continue
            return CheckpointInfo(path=path, seq=seq, checkpoint_id=checkpoint_id, meta=meta)
        return None

    def load_latest(self, *, model: bool = True) -> LoadedCheckpoint | None:
        """Load the newest complete, valid bundle; damaged ones are logged and skipped. None if there is none.

        Args:
            model: Load the model now, so a bundle whose model cannot be loaded is skipped too. False leaves it
                to the first use of :attr:`LoadedCheckpoint.model` (no TensorFlow until then: a run with nothing
                to train never needs it); the checksums, the meta and the learner state are checked either way.
        """
        for seq, checkpoint_id, path in reversed(self._bundle_names()):
            try:
                meta, members = _read_bundle(path, seq, checkpoint_id)
                info = CheckpointInfo(path=path, seq=seq, checkpoint_id=checkpoint_id, meta=meta)
                loaded = LoadedCheckpoint(info=info, learner_state=_load_state(members[STATE_MEMBER]),
                                          model_bytes=members[MODEL_MEMBER])
                if model:
                    loaded.model  # noqa: B018 - loads it
            except Exception as exc:  # noqa: BLE001 - any failure means: fall back to the previous bundle
                log.warning("skipping checkpoint %s: %s: %s", path.name, exc.__class__.__name__, exc)
                continue
            return loaded
        return None

    def bundles(self) -> list[Path]:
        """Bundle files present (complete or not checked), oldest first."""
        return [p for _, _, p in self._bundle_names()]

    # --- housekeeping ----------------------------------------------------------------------------------------

    def _bundle_names(self) -> list[tuple[int, str, Path]]:
        out = []
        for entry in os.scandir(self.directory):
            m = _BUNDLE_RE.match(entry.name)
            if m and entry.is_file():
                out.append((int(m.group(1)), m.group(2), Path(entry.path)))
        return sorted(out)

    def _prune(self, newest: Path) -> None:
        """Keep the newest ``keep`` valid bundles (and any newer damaged ones); drop older bundles and stale temps."""
        kept_valid = 0
        for seq, checkpoint_id, path in reversed(self._bundle_names()):
            if kept_valid >= self.keep:
                _unlink(path)
                continue
            try:
                if path != newest:
                    _read_bundle(path, seq, checkpoint_id)
                kept_valid += 1
            except (CheckpointError, OSError) as exc:
                log.warning("checkpoint %s is damaged (%s); it does not count towards keep=%d",
                            path.name, exc, self.keep)
        newest_mtime = newest.stat().st_mtime
        for entry in os.scandir(self.directory):
            if _TEMP_RE.match(entry.name):
                try:
                    if entry.stat().st_mtime <= newest_mtime:
                        _unlink(Path(entry.path))
                except FileNotFoundError:
                    pass
        fsync_dir(self.directory)

    def _hook(self, stage: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(stage)


# --- members ------------------------------------------------------------------------------------------------


def _read_bundle(path: Path, seq: int, checkpoint_id: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Open and check a bundle: zip readable, members present, meta parseable and consistent, sha256s match."""
    try:
        with zipfile.ZipFile(path, "r") as zf:
            names = set(zf.namelist())
            missing = {MODEL_MEMBER, STATE_MEMBER, META_MEMBER} - names
            if missing:
                raise CheckpointError(f"missing members {sorted(missing)}")
            members = {name: zf.read(name) for name in (MODEL_MEMBER, STATE_MEMBER, META_MEMBER)}
    except CheckpointError:
        raise
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, CRC errors, zlib.error, EOFError...: all mean damaged
        raise CheckpointError(f"not a readable zip ({exc.__class__.__name__}: {exc})") from exc
    try:
        meta = json.loads(members[META_MEMBER].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"meta.json unparseable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"meta.json is not a {FORMAT} meta")
    if meta.get("seq") != seq or meta.get("checkpoint_id") != checkpoint_id:
        raise CheckpointError("meta.json does not match the file name")
    sums = meta.get("sha256") or {}
    for name in (MODEL_MEMBER, STATE_MEMBER):
        if sums.get(name) != hashlib.sha256(members[name]).hexdigest():
            raise CheckpointError(f"sha256 mismatch for {name}")
    return meta, members


def _model_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ckpt-model-") as tmp:
        path = Path(tmp) / MODEL_MEMBER
        model.save(path)
        return path.read_bytes()


def _load_model(data: bytes) -> Any:
    import keras

    import include.training.model  # noqa: F401 - registers SchemaEncoding for deserialisation

    with tempfile.TemporaryDirectory(prefix="ckpt-model-") as tmp:
        path = Path(tmp) / MODEL_MEMBER
        path.write_bytes(data)
        return keras.saving.load_model(path, compile=True)


def _state_bytes(state: Mapping[str, Any]) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for key, value in state.items():
        if key == _SCALARS_KEY:
            raise ValueError(f"learner state key {_SCALARS_KEY!r} is reserved")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise ValueError(f"learner state {key!r} is an object array; it cannot be saved without pickle")
            arrays[key] = value
        else:
            scalars[key] = _jsonable(value)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_SCALARS_KEY: np.array(json.dumps(scalars, sort_keys=True))})
    return buf.getvalue()


def _load_state(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        state: dict[str, Any] = {k: npz[k] for k in npz.files if k != _SCALARS_KEY}
        state.update(json.loads(str(npz[_SCALARS_KEY])))
    return state


def _jsonable(value: Any) -> Any:
    """Check (and normalise numpy scalars in) a value that must round-trip through JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-able: {value!r} ({exc})") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
