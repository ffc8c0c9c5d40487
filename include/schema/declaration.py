"""The declared CSV schema: defined once, used by the validator, the producer, the reader and the model.

A schema is a small YAML (or JSON) file: built-in ones live in ``include/schema/builtin/<name>.yaml``; a user's own
layout is a file path given instead of a name, so new layouts need no code. This module parses and checks
declarations only; it never reads data files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "builtin"
COLUMN_TYPES = ("int", "float", "category", "timestamp")


class SchemaError(ValueError):
    """A schema declaration is invalid."""


@dataclass(frozen=True)
class Column:
    """One CSV column.

    ``type`` is int, float, category or timestamp (ISO 8601, UTC). ``min``/``max`` bound numbers (inclusive)
    and are also the scaling range of the feature encoding; ``categories`` lists a category's allowed values
    in a fixed order (their one-hot order). ``feature`` is False for columns the model must not see.
    """

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    feature: bool = True


@dataclass(frozen=True)
class CsvSchema:
    id: str
    columns: tuple[Column, ...]
    header: bool
    label: str
    key: str | None = None
    time: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def index(self, name: str) -> int:
        return self.names.index(name)

    @property
    def label_index(self) -> int:
        return self.index(self.label)

    @property
    def key_index(self) -> int | None:
        return None if self.key is None else self.index(self.key)

    @property
    def time_index(self) -> int | None:
        return None if self.time is None else self.index(self.time)

    @property
    def feature_columns(self) -> tuple[Column, ...]:
        """Columns the model sees, in CSV order (the label and non-features excluded)."""
        return tuple(c for c in self.columns if c.feature and c.name != self.label)

    def header_line(self) -> str:
        return ",".join(self.names)


def _column(raw: dict[str, Any], where: str) -> Column:
    unknown = set(raw) - {"name", "type", "min", "max", "categories", "feature"}
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    ctype = raw.get("type")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}: a column needs a non-empty 'name'")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"{where}: column {name!r} has type {ctype!r}; expected one of {COLUMN_TYPES}")
    cats = tuple(str(c) for c in raw.get("categories") or ())
    if ctype == "category" and not cats:
        raise SchemaError(f"{where}: category column {name!r} needs 'categories'")
    if ctype in ("int", "float") and (raw.get("min") is None or raw.get("max") is None):
        raise SchemaError(f"{where}: numeric column {name!r} needs 'min' and 'max' (they scale the feature)")
    lo, hi = raw.get("min"), raw.get("max")
    if lo is not None and hi is not None and float(lo) >= float(hi):
        raise SchemaError(f"{where}: column {name!r} has min {lo} >= max {hi}")
    return Column(
        name=name,
        type=ctype,
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        categories=cats,
        feature=bool(raw.get("feature", True)),
    )


def schema_from_dict(raw: dict[str, Any], where: str = "schema") -> CsvSchema:
    """Build and check a schema from its parsed declaration."""
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: a schema is a mapping")
    cols = raw.get("columns")
    if not isinstance(cols, list) or not cols:
        raise SchemaError(f"{where}: 'columns' must be a non-empty list")
    columns = tuple(_column(c, f"{where} column {i}") for i, c in enumerate(cols))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise SchemaError(f"{where}: duplicate column names")
    schema = CsvSchema(
        id=str(raw.get("id") or ""),
        columns=columns,
        header=bool(raw.get("header", False)),
        label=str(raw.get("label") or ""),
        key=raw.get("key"),
        time=raw.get("time"),
    )
    if not schema.id:
        raise SchemaError(f"{where}: 'id' is required (it travels in every message header)")
    for role in ("label", "key", "time"):
        value = getattr(schema, role)
        if value is not None and value not in names:
            raise SchemaError(f"{where}: {role} column {value!r} is not among the columns")
    label = columns[names.index(schema.label)]
    if label.type != "int" or label.min != 0 or label.max != 1:
        raise SchemaError(f"{where}: the label {schema.label!r} must be an int column with min 0 and max 1")
    if schema.time is not None and columns[names.index(schema.time)].type != "timestamp":
        raise SchemaError(f"{where}: time column {schema.time!r} must have type timestamp")
    return schema


def load_schema(name_or_path: str) -> CsvSchema:
    """Load a built-in schema by name (``drone``, ``blog_drift``) or a user's YAML/JSON file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCHEMA_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        builtin = sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml"))
        raise SchemaError(f"schema {name_or_path!r} not found (built-in: {builtin}, or give a .yaml/.json path)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        raw = json.loads(text)
    else:
        import yaml

        raw = yaml.safe_load(text)
    return schema_from_dict(raw, where=str(path))
