"""Fault injection points for the crash tests: SIGKILL this process at a named stage.

Production code calls :func:`reached` at the boundaries where a crash matters (mid-file, after a
checkpoint rename, after an offset commit...). It does nothing unless ``RETRAIN_FAULT_POINT`` names
that stage, so the tests can kill a real process exactly there.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from include.settings import get_settings

_counts: Counter[str] = Counter()
_point: str | None = None  # read once per process: the tests set it in a child's environment


def reached(stage: str) -> None:
    """Kill the process if the configured fault point is ``stage`` (or ``stage:N`` and this is the N-th time)."""
    global _point
    if _point is None:
        _point = get_settings().fault_point
    point = _point
    if not point:
        return
    name, _, nth = point.partition(":")
    if name != stage:
        return
    _counts[stage] += 1
    if not nth or _counts[stage] >= int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
