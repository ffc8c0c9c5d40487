"""The version folders: ``<models dir>/<model name>/<version>/``, TensorFlow Serving's layout.

One folder per version, written once and never changed::

    <models dir>/<model name>/<version>/saved_model.pb   the TF SavedModel (TF Serving loads the folder unchanged)
    <models dir>/<model name>/<version>/variables/
    <models dir>/<model name>/<version>/model.keras      the same model as a Keras file (what this project loads)
    <models dir>/<model name>/<version>/version.json     what the version is (checkpoint, coverage, metrics)

A folder is built under a hidden temporary name (``.<version>.<random>.tmp``, which TF Serving ignores: it only
loads all-digit names), fsynced and renamed into place, so a reader sees a whole version or none. A folder whose
version the database does not record is an orphan of a crash between the rename and the database write; it is
replaced by the next registration of that number. This module never decides which version is served.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from include.durable import fsync_dir

KERAS_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
META_FILE = "version.json"
_TEMP = re.compile(r"^\.\d+\..+\.tmp$")


class VersionStore:
    """The version folders of one model name.

    Args:
        models_dir: The models folder (``RETRAIN_MODELS_DIR``).
        model_name: The model name (one subfolder).
    """

    def __init__(self, models_dir: str | Path, model_name: str) -> None:
        self.root = Path(models_dir) / model_name

    def version_dir(self, version: int) -> Path:
        return self.root / str(int(version))

    def keras_path(self, version: int) -> Path:
        return self.version_dir(version) / KERAS_FILE

    def saved_model_dir(self, version: int) -> Path:
        """The folder a SavedModel loader (``tf.saved_model.load``, TF Serving) is given."""
        return self.version_dir(version)

    def is_complete(self, version: int) -> bool:
        folder = self.version_dir(version)
        return (folder / KERAS_FILE).is_file() and (folder / SAVED_MODEL_FILE).is_file()

    def new_temp_dir(self, version: int) -> Path:
        """A fresh hidden folder to build a version in (then :meth:`publish`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{int(version)}.{uuid.uuid4().hex}.tmp"
        temp.mkdir()
        return temp

    def publish(self, temp: Path, version: int) -> Path:
        """Rename a complete, fsynced temp folder to the version's folder (replacing an orphan of a crash)."""
        final = self.version_dir(version)
        if final.exists():
            shutil.rmtree(final)
        temp.rename(final)
        fsync_dir(self.root)
        return final

    def remove(self, version: int) -> None:
        """Delete a version's folder (its database row stays: the history of what was served does not change)."""
        shutil.rmtree(self.version_dir(version), ignore_errors=True)

    def clean_temp_dirs(self) -> None:
        """Remove folders left half-built by a crash."""
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and _TEMP.match(child.name):
                    shutil.rmtree(child, ignore_errors=True)
