"""Generations of a topic and rebuild records, on a real (SQLite) history database migrated by Alembic.

What must hold: a second rebuild request joins the active one (also when two race); the switch changes the live
pointer, the generations' statuses and the new lineage's champion together, and a reader of :func:`served` sees
either the old pair or the new one; switching back works; retention retires what it does not keep; a rejected
rebuild leaves the live generation alone.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from include.history import db
from include.lifecycle.generations import (
    Generations,
    generation_settings,
    generation_topic,
    lineage_name,
    served,
    switch,
)
from include.lifecycle.registry import LifecycleError
from include.rebuild import records
from include.settings import settings_from_env

BASE = "obs"


@pytest.fixture
def sessions(tmp_path):
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path)})
    return db.session_factory(settings.db_url)


def _version(sessions, lineage: str, version: int, status: str) -> None:
    with sessions.begin() as s:
        s.add(db.ModelVersion(model_name=lineage, version=version, checkpoint_id=f"c{version}", run_id=None,
                              schema_id="drone", topic=BASE, offsets={}, records_total=100 * version, path="/x",
                              metrics={}, status=status))
        if status == "champion":
            s.add(db.ModelPointer(model_name=lineage, champion_version=version, changed_by="test"))


def test_names_and_settings_of_a_generation():
    assert generation_topic("obs", 1) == "obs" and generation_topic("obs", 3) == "obs.g3"
    assert lineage_name("default", 1) == "default" and lineage_name("default", 2) == "default.g2"
    settings = settings_from_env({"RETRAIN_TOPIC": "obs"})
    g2 = generation_settings(settings, 2)
    assert (g2.topic, g2.dlq_topic, g2.requests_topic, g2.scorer_group) == (
        "obs.g2", "obs.g2.dlq", "obs.requests", settings.scorer_group)
    assert generation_settings(settings, 1) is settings


def test_generation_one_is_live_before_anything_is_recorded(sessions):
    generations = Generations(sessions, BASE)
    assert generations.live() == 1 and generations.live_topic() == BASE
    assert [(g.generation, g.status) for g in generations.all()] == [(1, "live")]
    assert generations.lineage("default") == ("default", 1)
    assert served(sessions, BASE, "default") == ("default", None)


def test_a_second_request_joins_the_active_rebuild(sessions):
    first, joined = records.request(sessions, BASE, "default", reason="older file a.csv", actor="ingest",
                                    files=["a.csv"])
    assert not joined and (first.generation, first.topic, first.lineage, first.state) == (2, "obs.g2", "default.g2",
                                                                                         "requested")
    second, joined = records.request(sessions, BASE, "default", reason="by hand", actor="alice")
    again, _ = records.request(sessions, BASE, "default", reason="by hand", actor="alice")
    assert joined and second.id == first.id == again.id
    assert [r["by"] for r in records.get(sessions, first.id).requests] == ["ingest", "alice"]
    assert [(g.generation, g.status) for g in Generations(sessions, BASE).all()] == [(1, "live"), (2, "rebuilding")]


def test_requests_racing_start_one_rebuild(sessions):
    ids, errors = [], []

    def ask(n):
        try:
            ids.append(records.request(sessions, BASE, "default", reason=f"r{n}", actor=f"a{n}")[0].id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1
    with sessions() as s:
        assert len(s.scalars(select(db.Rebuild)).all()) == 1


def test_switch_is_one_step_and_can_be_switched_back(sessions):
    _version(sessions, "default", 1, "retired")
    _version(sessions, "default", 2, "champion")
    rebuild, _ = records.request(sessions, BASE, "default", reason="older week", actor="ingest")
    _version(sessions, "default.g2", 1, "champion")  # the lineage's first version (champion of its lineage)
    _version(sessions, "default.g2", 2, "candidate")
    assert served(sessions, BASE, "default") == ("default", 2)

    result = switch(sessions, BASE, 2, "default", actor="gate", reason="rebuild passed", champion_version=2,
                    rebuild_id=rebuild.id, gate={"candidate_accuracy": 0.9})
    assert (result.from_generation, result.to_generation, result.lineage, result.champion_version) == (
        1, 2, "default.g2", 2)
    assert served(sessions, BASE, "default") == ("default.g2", 2)
    assert served(sessions, BASE, "other") == ("other", None)  # not rebuilt: stays in generation 1
    generations = Generations(sessions, BASE)
    assert [(g.generation, g.status) for g in generations.all()] == [(1, "standby"), (2, "live")]
    assert generations.lineage("default") == ("default.g2", 2) and generations.lineage("other") == ("other", 1)
    done = records.get(sessions, rebuild.id)
    assert (done.state, done.decision, done.candidate_version, done.active) == ("switched", "switch", 2, False)
    with sessions() as s:
        statuses = {(v.model_name, v.version): v.status for v in s.scalars(select(db.ModelVersion))}
        actions = [(e.model_name, e.action) for e in s.scalars(select(db.ModelEvent).order_by(db.ModelEvent.id))]
    assert statuses[("default.g2", 2)] == "champion" and statuses[("default.g2", 1)] == "retired"
    assert statuses[("default", 2)] == "champion"  # the old lineage keeps its champion, for switching back
    assert ("default.g2", "generation_live") in actions and ("default", "generation_standby") in actions

    assert not switch(sessions, BASE, 2, "default", actor="gate", reason="again", rebuild_id=rebuild.id).changed
    back = switch(sessions, BASE, 1, "default", actor="bob", reason="switch back")
    assert back.changed and served(sessions, BASE, "default") == ("default", 2)
    assert [(g.generation, g.status) for g in generations.all()] == [(1, "live"), (2, "standby")]
    assert generations.pointer()["previous_generation"] == 2


def test_switch_refuses_what_cannot_be_served(sessions):
    rebuild, _ = records.request(sessions, BASE, "default", reason="r", actor="a")
    with pytest.raises(LifecycleError, match="no champion"):
        switch(sessions, BASE, 2, "default", actor="a", reason="r")
    with pytest.raises(LifecycleError, match="no generation 5"):
        switch(sessions, BASE, 5, "default", actor="a", reason="r")
    with pytest.raises(LifecycleError, match="rebuilt for model 'default'"):
        switch(sessions, BASE, 2, "other", actor="a", reason="r")
    assert Generations(sessions, BASE).live() == 1 and records.get(sessions, rebuild.id).active


def test_rejection_leaves_live_alone_and_retention_retires_the_old(sessions):
    _version(sessions, "default", 1, "champion")
    first, _ = records.request(sessions, BASE, "default", reason="r", actor="a")
    records.reject(sessions, first.id, reason="worse than the champion", gate={"rows": 300}, candidate_version=3)
    rejected = records.get(sessions, first.id)
    assert (rejected.state, rejected.decision, rejected.active) == ("rejected", "reject", False)
    assert records.active(sessions, BASE) is None and Generations(sessions, BASE).live() == 1
    assert records.update(sessions, first.id, state="training").state == "rejected"  # finished: left alone

    second, joined = records.request(sessions, BASE, "default", reason="again", actor="a")
    assert not joined and second.generation == 3
    _version(sessions, "default.g3", 1, "champion")
    result = switch(sessions, BASE, 3, "default", actor="gate", reason="ok", champion_version=1,
                    rebuild_id=second.id, keep=1)
    assert result.retired == (2,)  # the rejected generation; generation 1 is kept (standby) for switching back
    assert [(g.generation, g.status) for g in Generations(sessions, BASE).all()] == [
        (1, "standby"), (2, "retired"), (3, "live")]
    third, _ = records.request(sessions, BASE, "default", reason="third", actor="a")
    _version(sessions, "default.g4", 1, "champion")
    assert switch(sessions, BASE, 4, "default", actor="gate", reason="ok", champion_version=1,
                  rebuild_id=third.id, keep=1).retired == (1,)


def test_a_live_position_maps_into_the_rebuild_topic_file_by_file():
    from types import SimpleNamespace as Row

    from include.rebuild.training import map_point

    # Live topic: files b, c (offsets with a transaction marker after each). Rebuild topic: a (older), b, c.
    live = [Row(content_sha256="b", offsets={"0": [0, 99]}), Row(content_sha256="c", offsets={"0": [101, 150]})]
    rebuild = {"a": Row(offsets={"0": [0, 49]}), "b": Row(offsets={"0": [51, 150]}), "c": Row(offsets={"0": [152, 201]})}
    assert map_point(live, rebuild, {0: 0}) == {0: 51}  # before b: after the older file a
    assert map_point(live, rebuild, {0: 40}) == {0: 91}  # inside b
    assert map_point(live, rebuild, {0: 101}) == {0: 152}  # b done (past its marker): c's start
    assert map_point(live, rebuild, {0: 100}) == {0: 152}  # b done, at its marker
    assert map_point(live, rebuild, {0: 151}) == {0: 202}  # after c, at its marker
    assert map_point(live, rebuild, {0: 152}) == {0: 203}  # the end: after c and its marker
    assert map_point(live, {"a": rebuild["a"], "b": rebuild["b"]}, {0: 120}) is None  # c not in the rebuild yet
