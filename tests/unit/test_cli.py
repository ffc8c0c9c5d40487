"""The command line, ``python -m include``, run as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import PROJECT, process_env

COMMANDS = ("ingest", "train", "baseline", "report", "generate", "demo", "models", "score", "rebuild", "generations")


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "include", *args], cwd=PROJECT, env=process_env(env or {}),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command_with_one_line():
    result = cli("--help", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.split("Commands:")[1].splitlines():
        words = line.split(None, 1)
        if len(words) == 2:
            listed[words[0]] = words[1]
    assert set(COMMANDS) <= set(listed), result.stdout
    assert all(not text.endswith("...") for text in listed.values()), listed


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0 and "Usage: python -m include " + command in result.stdout, result.stderr


def test_generate_writes_files_and_sidecars(tmp_path):
    out = tmp_path / "landing"
    result = cli("generate", "--start", "2026-01-05", "--end", "2026-01-06", "--out", str(out), "--seed", "3",
                 "--drift-from", "2026-01-06", "--shops", "20", "--noise", "0.01")
    assert result.returncode == 0, result.stderr
    assert "2 files, 960 rows" in result.stdout
    meta = json.loads((out / "observations_2026-01-06.meta.json").read_text())
    assert (meta["seed"], meta["shops"], meta["noise"], meta["drift"]) == (3, 20, 0.01, True)


@pytest.mark.parametrize("args, env, code, words", [
    (("report", "--out", "x"), {"RETRAIN_BATCH_MESSAGES": "many"}, 2, ["RETRAIN_BATCH_MESSAGES", "'many'", "integer"]),
    (("report", "--out", "x"), {"KAFKA_CONFIG_JSON": "{sasl"}, 2, ["KAFKA_CONFIG_JSON", "not valid JSON"]),
    (("ingest", "no/such/observations_2026-01-05.csv", "--schema", "nope"), {}, 2, ["schema 'nope' not found"]),
    (("generate", "--start", "2026-01-05", "--end", "Monday"), {}, 2, ["--end", "not a date"]),
    (("score", "--partitions", "0,one"), {}, 2, ["--partitions", "not a comma-separated list"]),
])
def test_a_mistake_is_one_line_that_says_what_to_do(tmp_path, args, env, code, words):
    result = cli(*args, env={"RETRAIN_STATE_DIR": str(tmp_path), **env})
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    problem = [line for line in result.stderr.splitlines() if "rror" in line]
    assert problem and all(w in result.stderr for w in words), result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = cli("--debug", "report", "--out", "x", env={"RETRAIN_BATCH_MESSAGES": "many"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_models_commands_default_to_the_model_named_default(tmp_path):
    """As every other command: no --model-name means 'default' (a lifecycle error, exit 6, not a usage error)."""
    env = {"RETRAIN_STATE_DIR": str(tmp_path)}
    for args in (("models", "show"), ("models", "rollback", "--reason", "r"), ("models", "promote", "--version", "1",
                                                                                "--reason", "r")):
        result = cli(*args, env=env)
        assert result.returncode == 6, (args, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("error: model 'default' "), result.stderr


def test_generations_and_rebuilds_from_the_command_line(tmp_path):
    env = {"RETRAIN_STATE_DIR": str(tmp_path), "RETRAIN_TOPIC": "obs"}
    listed = cli("generations", "list", env=env)
    assert listed.returncode == 0 and "topic obs: live generation 1" in listed.stdout, listed.stderr
    asked = cli("rebuild", "request", "--reason", "a missed file turned up", "--actor", "alice", env=env)
    assert asked.returncode == 0, asked.stderr
    first = json.loads(asked.stdout)
    assert (first["joined"], first["generation"], first["topic"], first["lineage"]) == (False, 2, "obs.g2", "default.g2")
    again = json.loads(cli("rebuild", "request", "--reason", "me too", "--actor", "bob", env=env).stdout)
    assert again["joined"] and again["id"] == first["id"] and len(again["requests"]) == 2
    assert "obs.g2" in cli("generations", "list", env=env).stdout
    refused = cli("generations", "switch", "--generation", "2", "--reason", "too early", env=env)
    assert refused.returncode == 6 and refused.stderr.startswith("error: lineage 'default.g2' has no champion")
    cancelled = json.loads(cli("rebuild", "cancel", "--reason", "not needed", "--actor", "alice", env=env).stdout)
    assert cancelled["state"] == "cancelled" and "rejected" in cli("generations", "list", env=env).stdout
