"""DAG integrity: every DAG file imports without errors, has tags and retries, and imports no TensorFlow.

The DAG processor parses these files every few seconds, so heavy imports at top level are defects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT

DAG_FILES = sorted(p for p in (PROJECT / "dags").glob("*.py") if not p.name.startswith("_"))

_PROBE = r"""
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag   # Airflow >= 3.2
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("tensorflow", "tensorflow_io", "keras", "confluent_kafka") if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"tags": sorted(d.tags or []), "retries": [t.retries for t in d.tasks],
                        "doc_md": bool(d.doc_md)} for d in bag.dags.values()},
    "heavy": heavy,
}))
"""


def _load(path: Path) -> dict:
    env = {"PYTHONPATH": str(PROJECT), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_there_are_dag_files():
    assert DAG_FILES, "no DAG files found"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file(path):
    result = _load(path)
    assert result["errors"] == {}, result["errors"]
    assert result["dags"], f"{path.name} defines no DAG"
    assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at top level"
    for dag_id, dag in result["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert dag["doc_md"], f"{dag_id} has no doc_md"
        assert all(r >= 1 for r in dag["retries"]), f"{dag_id} has a task without retries: {dag['retries']}"
