"""The declared CSV layout and the one value parser.

Owns: schema declarations (built-in YAML files in ``builtin/`` or a user's file) and the rules that say what a
field string means for its column (:mod:`include.schema.values`, with vectorised fast paths that accept only what
those rules accept in :mod:`include.schema.columns`), used alike by ingest validation, the training decoder and
prediction. Never reads data files or talks to Kafka or a database.
"""

from include.schema.declaration import (
    COLUMN_TYPES,
    SCHEMA_DIR,
    Column,
    CsvSchema,
    SchemaError,
    load_schema,
    schema_from_dict,
)

__all__ = ["COLUMN_TYPES", "SCHEMA_DIR", "Column", "CsvSchema", "SchemaError", "load_schema", "schema_from_dict"]
