"""Crash-safe file system steps shared by the checkpoint store and the model version store.

A file or folder becomes visible under its final name only complete: written under a hidden temporary name, its
bytes fsynced, renamed (atomic on one file system), and the parent folder fsynced so the rename itself survives a
power cut. Nothing here knows what the files mean.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a folder's entries (a rename into it, a new file) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (deepest first), ``root`` included."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))
