"""The trainer lock: at most one trainer per model folder.

Owns: the exclusive, non-blocking ``flock`` on ``<checkpoint folder>/.trainer.lock``. The kernel releases it when
the process dies, so a crashed trainer never blocks its successor. A second trainer fails fast with
:class:`include.training.options.TrainerBusy` before touching anything. Never waits for the lock and never
deletes the lock file (a deleted, re-created file would let two trainers hold "the" lock at once).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from include.training.options import TrainerBusy


@contextmanager
def trainer_lock(directory: Path) -> Iterator[None]:
    """Hold the model folder's lock for the ``with`` block.

    Args:
        directory: The model's checkpoint folder (created if missing).

    Raises:
        TrainerBusy: Another process holds the lock; this run changed nothing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".trainer.lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TrainerBusy(f"another trainer is running on {directory} (lock {path}); this run changed nothing") from exc
        # The holder's pid, for whoever looks at a stuck lock.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
