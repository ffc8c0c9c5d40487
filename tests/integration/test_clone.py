"""A user clones the repository alone: nothing in it may read outside the clone (no ``../shared`` beside it).

The repository is cloned into an empty temporary folder. Statically, no tracked file names a path outside the
clone. Dynamically, the unit suite and the blog file's ingest through the real broker run inside the clone with a
``sitecustomize`` audit hook in every Python process (the tests' child processes get the clone on their
``PYTHONPATH``, so they load it too): every file a process opens, or tries to open, inside the clone's parent
folder but outside the clone is written to a log, which must stay empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AUDIT_HOOK = '''
import os, sys
_log, _clone = os.environ.get("CLONE_AUDIT_LOG"), os.environ.get("CLONE_ROOT")
if _log and _clone:
    _outside = os.path.dirname(_clone.rstrip("/"))
    def _hook(event, args, _log=_log, _clone=_clone, _outside=_outside):
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return
        path = os.path.abspath(path)
        if path.startswith(_outside + os.sep) and not (path + os.sep).startswith(_clone + os.sep):
            with open(_log, "a") as handle:  # inside the clone's parent, outside the clone: record it
                handle.write(f"{os.getpid()} {event} {path} {sys.argv[:3]}\\n")
    sys.addaudithook(_hook)
'''


def test_nothing_reads_outside_a_fresh_clone(tmp_path, kafka_bootstrap):
    clone = tmp_path / "empty" / "project"
    clone.parent.mkdir()
    subprocess.run(["git", "clone", "--quiet", str(PROJECT), str(clone)], check=True, timeout=120)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["project"]

    # Statically: no tracked file points at the shared folder or at an absolute checkout path.
    found = subprocess.run(["git", "grep", "-n", "-I", "-E", r"\.\./shared|/work/shared|/work/main", "--",
                            ":!tests/integration/test_clone.py"], cwd=clone, capture_output=True, text=True)
    assert found.returncode == 1, f"tracked files point outside the clone:\n{found.stdout}"

    # Dynamically: run the unit suite and the blog file's ingest in the clone, auditing every open.
    (clone / "sitecustomize.py").write_text(AUDIT_HOOK)
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    (clone / "infra" / "kafka" / "lib").symlink_to(PROJECT / "infra" / "kafka" / "lib")
    log = tmp_path / "outside-reads.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "AIRFLOW"))}
    env.update(PYTHONPATH=str(clone), CLONE_ROOT=str(clone), CLONE_AUDIT_LOG=str(log),
               KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TF_CPP_MIN_LOG_LEVEL="2",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/unit",
         "tests/integration/test_ingest.py::test_blog_file_ingests_with_exactly_its_malformed_line_quarantined"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "deselected" not in result.stdout
    outside = log.read_text() if log.exists() else ""
    assert outside == "", f"processes read outside the clone:\n{outside[:4000]}"
