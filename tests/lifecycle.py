"""Helpers of the model-lifecycle tests: generated weeks (optionally label-flipped) ingested for real, a registering
trainer process, the registry of its state folder, and the invariants no crash may break."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from include.demo.generate import generate_range
from include.history import db
from include.ingest.interval import ingest_files
from include.lifecycle.registry import Registry
from include.settings import settings_from_env
from tests.support import Runner, unique

SHOPS = 20  # 480 rows a day, 3,360 a week: a week's run holds out 672 rows (the gate needs 200)
WEEK1 = date(2026, 1, 5)


def week_files(landing: Path, week: int, *, drift_from_week: int | None = None, flip: bool = False) -> list[Path]:
    """The CSV files of week ``week`` (1 = the week of 2026-01-05) of one generated stream; ``flip`` inverts every
    label (a broken labelling job), written to a separate folder."""
    start = WEEK1 + timedelta(weeks=week - 1)
    drift_from = WEEK1 + timedelta(weeks=drift_from_week - 1) if drift_from_week else None
    paths = generate_range(start, start + timedelta(days=6), landing, seed=5, shops=SHOPS, noise=0.05,
                           drift_from=drift_from)
    if not flip:
        return paths
    flipped = landing / "flipped"
    flipped.mkdir(exist_ok=True)
    out = []
    for path in paths:
        header, *rows = path.read_text().splitlines()
        lines = [header] + [f"{row[:-1]}{1 - int(row[-1])}" for row in rows]  # busy is the last column, 0 or 1
        target = flipped / path.name
        target.write_text("\n".join(lines) + "\n")
        out.append(target)
    return out


class LifecycleRunner(Runner):
    """A registering trainer process on the drone schema, in replay mode, with its own state and topic."""

    def __init__(self, tmp_path: Path, bootstrap: str, *, extra_env: dict | None = None) -> None:
        super().__init__(tmp_path, bootstrap, unique("life"), schema="drone")
        self.register = True
        self.env.update(extra_env or {})
        self.settings = settings_from_env(self.env)

    def ingest(self, paths: list[Path]) -> None:
        result = ingest_files(paths, settings=self.settings)
        assert result.rows > 0

    def train(self, *args: str) -> dict:
        return self.ok("--mode", "replay", *args)

    def registry(self) -> Registry:
        return Registry(self.settings)


def assert_no_half_state(registry: Registry, model_name: str = "default") -> None:
    """Every version row with files has complete files; one champion, the one the pointer names; no temp folder."""
    store = registry.store(model_name)
    versions = registry.versions(model_name)
    for v in versions:
        if v.files_removed_at is None:
            assert store.is_complete(v.version), f"version {v.version} is recorded but its files are incomplete"
    champions = [v.version for v in versions if v.status == "champion"]
    with registry.sessions() as session:
        pointer = session.get(db.ModelPointer, model_name)
        checkpoints = set(session.scalars(select(db.ModelVersion.checkpoint_id)
                                          .where(db.ModelVersion.model_name == model_name)))
    if versions:
        assert pointer is not None and champions == [pointer.champion_version], (champions, pointer)
    assert len(checkpoints) == len(versions), "two versions of one checkpoint"
    if store.root.is_dir():
        assert not [p.name for p in store.root.iterdir() if p.name.startswith(".")], "a temp folder was left"
