"""What the benchmark scripts share: where the author's file is, a one-line description of the machine, and how a
report is printed and written."""

from __future__ import annotations

import os
import platform
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BLOG_FILE = PROJECT.parent / "shared" / "data" / "drift_2weeks_V2.csv"  # the blog author's file, byte for byte


def machine() -> str:
    """CPU count and model (from /proc/cpuinfo where there is one) and the Python version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}"


def publish(text: str, out: Path) -> None:
    """Print a markdown report and write it to ``out`` (its folder created if missing)."""
    print()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
