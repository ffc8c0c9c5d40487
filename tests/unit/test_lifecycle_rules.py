"""The lifecycle's bookkeeping on a real SQLite registry (version folders stand in as files, no model is scored):
which candidates the gate supersedes or leaves waiting, and which folders pruning removes."""

from __future__ import annotations

from sqlalchemy import select

from include.history import db
from include.lifecycle import gate
from include.lifecycle.pruning import prune_versions
from include.lifecycle.registry import Registry
from include.settings import settings_from_env


def make_registry(tmp_path, statuses: dict[int, str], previous: int | None = None) -> Registry:
    """Versions 1..n with the given statuses (one ``champion``), their folders holding placeholder files."""
    registry = Registry(settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path)}))
    store = registry.store("m")
    champion = next(v for v, s in statuses.items() if s == "champion")
    with registry.sessions.begin() as session:
        for version, status in statuses.items():
            folder = store.version_dir(version)
            folder.mkdir(parents=True)
            for name in ("model.keras", "saved_model.pb"):
                (folder / name).write_bytes(b"placeholder")
            session.add(db.ModelVersion(model_name="m", version=version, checkpoint_id=f"c{version}", schema_id="s",
                                        topic="t", offsets={"0": version}, records_total=version, path=str(folder),
                                        metrics={}, status=status))
        session.add(db.ModelPointer(model_name="m", champion_version=champion, previous_version=previous,
                                    changed_by="test"))
    return registry


def statuses(registry: Registry) -> dict[int, str]:
    return {v.version: v.status for v in registry.versions("m")}


def test_older_candidates_are_superseded_and_the_newest_judgeable_one_waits_without_rows(tmp_path):
    registry = make_registry(tmp_path, {1: "champion", 2: "candidate", 3: "candidate", 4: "candidate"})
    judgements = gate.evaluate(registry, "m")  # version 4 kept no held-out rows: version 3 cannot be judged yet
    assert [(j.version, j.decision) for j in judgements] == [(2, "supersede"), (3, "wait")]
    assert statuses(registry) == {1: "champion", 2: "superseded", 3: "candidate", 4: "candidate"}
    assert registry.get("m", 3).gate["rows"] == 0 and registry.get("m", 3).gate["evaluated_on_version"] == 4
    gate.evaluate(registry, "m")  # again: the same wait is not recorded twice
    with registry.sessions() as s:
        actions = [e.action for e in s.scalars(select(db.ModelEvent).order_by(db.ModelEvent.id))]
    assert actions == ["superseded", "deferred"]


def test_a_model_without_versions_has_nothing_to_judge(tmp_path):
    registry = Registry(settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path)}))
    assert gate.evaluate(registry, "nothing") == []


def test_a_candidate_older_than_the_champion_is_superseded(tmp_path):
    registry = make_registry(tmp_path, {1: "retired", 2: "candidate", 3: "champion", 4: "candidate"}, previous=1)
    assert [(j.version, j.decision) for j in gate.evaluate(registry, "m")] == [(2, "supersede")]
    assert registry.get("m", 2).reason.startswith("not judged")


def test_pruning_keeps_the_newest_the_champion_and_the_previous_champion(tmp_path):
    registry = make_registry(tmp_path, {1: "retired", 2: "champion", 3: "rejected", 4: "candidate", 5: "candidate",
                                        6: "candidate"}, previous=1)
    assert prune_versions(registry, "m", keep=2) == [4, 3]
    on_disk = {v.version: v.on_disk for v in registry.versions("m")}
    assert on_disk == {1: True, 2: True, 3: False, 4: False, 5: True, 6: True}
    assert not registry.store("m").version_dir(3).exists() and registry.get("m", 3).files_removed_at is not None
    assert statuses(registry)[3] == "rejected"  # the row stays
    assert prune_versions(registry, "m", keep=2) == []
