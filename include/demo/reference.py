"""The blog author's published data, vendored in ``data/reference/`` with its licence and provenance (README there).

Tests and benchmarks read it from here; nothing in the project reads outside its own folder.
"""

from __future__ import annotations

from include.settings import PROJECT_ROOT

REFERENCE_DIR = PROJECT_ROOT / "data" / "reference"
BLOG_FILE = REFERENCE_DIR / "drift_2weeks_V2.csv"  # byte for byte as published: BOM, CRLF, no header
BLOG_SCHEMA = "blog_drift"
BLOG_ROWS = 11_199  # valid rows (line 5,601, the first of week 2, has 13 fields)
