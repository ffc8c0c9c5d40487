"""Security: Kafka SASL settings reach every client unchanged and never reach a log; no secret is tracked in git."""

from __future__ import annotations

import ast
import base64
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from include.ingest.interval import ingest_files
from include.kafka.clients import KafkaClients, redact
from tests.faults.helpers import (
    PROJECT,
    check_history,
    check_topic,
    check_training,
    drone_rows,
    env_for,
    settings_for,
    train_in_process,
    unique,
    write_csv,
)

pytestmark = [pytest.mark.faults]


@pytest.mark.integration
def test_sasl_settings_reach_the_clients_unchanged_and_are_masked_in_logs(tmp_path, running_broker, fault_row,
                                                                           caplog, capfd, monkeypatch):
    secret = running_broker.password
    sasl = running_broker.sasl_config()
    topic = unique("sasl")
    caplog.set_level(logging.DEBUG)

    # The SASL listener really checks the password: a wrong one is refused.
    wrong = AdminClient({"bootstrap.servers": running_broker.sasl_bootstrap, **sasl, "sasl.password": secret[::-1]})
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)
    del wrong

    # Outside Airflow: KAFKA_CONFIG_JSON, passed through untouched to producer, consumer and admin client.
    env = env_for(tmp_path / "state", running_broker.sasl_bootstrap, topic, KAFKA_CONFIG_JSON=json.dumps(sasl))
    settings = settings_for(env)
    clients = KafkaClients(settings)
    assert clients.config == {"bootstrap.servers": running_broker.sasl_bootstrap, **sasl}
    assert all(clients.producer_config(transactional_id="x")[k] == v for k, v in sasl.items())
    assert all(clients.consumer_config("g")[k] == v for k, v in sasl.items())
    assert redact(clients.config)["sasl.password"] == "***"
    first, second = drone_rows(600), drone_rows(400, start=600)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", first)], settings=settings)

    # Inside Airflow: the kafka_default Connection's extra, through Airflow's connection API; the plain
    # bootstrap setting points nowhere, so only the Connection can have been used.
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": running_broker.sasl_bootstrap, **sasl}}))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    no_kafka = settings.with_overrides(kafka_bootstrap_servers="127.0.0.1:1", kafka_extra_config={})
    assert KafkaClients(no_kafka, use_airflow=True).config == {"bootstrap.servers": running_broker.sasl_bootstrap, **sasl}
    result = ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-06.csv", second)],
                          settings=no_kafka, use_airflow=True)
    assert result.files[0].status == "committed"
    summary = train_in_process(env)  # the bounded reader, the offset commits and the admin calls, over SASL
    assert summary.records == 1000

    data = check_topic(running_broker.bootstrap, topic, first + second)
    trained = check_training(settings.db_url, data.offsets)
    check_history(env)
    out, err = capfd.readouterr()
    captured = caplog.text + out + err
    assert "Kafka client configuration" in caplog.text and "'sasl.password': '***'" in caplog.text
    leaks = [where for where, text in (("logs", caplog.text), ("stdout", out), ("stderr", err)) if secret in text]
    stored = [p for p in (tmp_path / "state").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    fault_row("SASL/PLAIN via KAFKA_CONFIG_JSON and via the Airflow Connection", runs=3, produced=1000,
              in_topic=data.in_topic, trained=trained.trained, duplicates=data.duplicates + trained.duplicates,
              losses=data.losses + trained.losses, note=f"password in logs: {leaks or 'no'}, in state files: "
                                                        f"{[p.name for p in stored] or 'no'}")
    assert data.exact and trained.exact
    assert not leaks, f"the SASL password appeared in {leaks}"
    assert not stored, f"the SASL password was written to {stored}"
    assert "sasl.username" in captured  # the configuration was logged, masked


# --- no secret in the repository -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text[:120]}"


# Credentials that are secrets wherever they appear (documentation included).
STRONG = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_?secret_?access_?key\s*[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "API secret key": re.compile(r"\b(?:sk_live_[0-9A-Za-z]{20,}|sk-(?:proj-)?[A-Za-z0-9_-]{32,})"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"$]+:([^\s/@'\"$]+)@"),
}
# A secret-looking name given a literal value, in code and configuration (not in prose).
SECRET_WORDS = {"password", "passwords", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "secretkey",
                "accesskey", "privatekey"}
SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "token")}
ASSIGNED_QUOTED = re.compile(  # JS, JSON, YAML or shell: name = "literal" / "name": "literal"
    r"""["']?(?P<name>[A-Za-z_][\w.-]*)["']?\s*(?::|=|:=)\s*(?P<q>["'])(?P<value>[^"'\n]*)(?P=q)\s*(?:[,;)}\]#]|$)""")
ASSIGNED_BARE = re.compile(  # YAML, shell, properties, .env: name: literal / NAME=literal
    r"^\s*(?:export\s+|-\s+)?(?P<name>[A-Za-z_][\w.-]*)\s*(?::|=)\s*(?P<value>[^\s\"'#$][^\s#]*)\s*(?:#.*)?$")
REGEX_SUFFIXES = {".js", ".ts", ".json", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".sh", ".properties", ".env",
                  ".conf", ".html"}
BARE_SUFFIXES = {".yml", ".yaml", ".sh", ".properties", ".env", ".conf", ".cfg", ".ini", ".toml"}
SECRET_FILE_NAMES = re.compile(r"(?i)(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)|\.env|\.htpasswd|passwords\.json|"
                               r"credentials\.json|[^/]*\.(?:pem|key|p12|pfx|jks|keystore|kdbx))$")


def secretish(name: str) -> bool:
    """Does an identifier or key name a secret (``db_password``, ``sasl.password``, ``apiKey``, ``JWT_SECRET``)?"""
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]
    return any(w in SECRET_WORDS for w in words) or any(pair in SECRET_PAIRS for pair in zip(words, words[1:]))


def _not_a_literal(value: str) -> bool:
    """Values that name a secret instead of holding one: empty, masked, placeholders, references, paths."""
    v = value.strip()
    return (
        len(v) < 4
        or set(v) <= {"*", "x", "X", "."}
        or v.startswith(("$", "{{", "<", "%(", "/", "./", "~"))
        or v.lower() in {"none", "null", "true", "false", "redacted"}
        or re.fullmatch(r"[A-Za-z_][\w.]*\(.*\)", v) is not None  # a call, e.g. secrets.token_hex(16)
        or _claimless_jwt(v)
    )


def _claimless_jwt(value: str) -> bool:
    """A JWT whose payload holds no claim (``{}``) authenticates nobody: tests forge such tokens to be refused."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].startswith("eyJ"):
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    return claims == {}


def _strip_env_defaults(line: str) -> str:
    """``${VAR:-default}`` and ``${VAR}``: the compose file's documented local-dev defaults, not literals."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-=?+][^}]*)?\}", "${ENV}", line)


def _python_findings(path: str, text: str) -> list[Finding] | None:
    """Literal strings bound to secret-looking names in Python: assignments, dict entries, keywords, defaults."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    found: list[Finding] = []

    def name_of(node) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Subscript):
            return name_of(node.slice)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return None

    def check(target, value, line: int) -> None:
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
            for t, v in zip(target.elts, value.elts):
                check(t, v, line)
            return
        name = name_of(target) if target is not None else None
        if (name and secretish(name) and isinstance(value, ast.Constant) and isinstance(value.value, str)
                and not _not_a_literal(value.value)):
            found.append(Finding(path, line, f"literal value for {name}", text.splitlines()[line - 1].strip()))

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                check(target, node.value, node.lineno)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            check(node.target, node.value, node.lineno)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is not None:
                    check(key, value, value.lineno)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg:
                    check(ast.Name(id=kw.arg), kw.value, kw.value.lineno)
        elif isinstance(node, ast.arguments):
            positional = node.posonlyargs + node.args
            for arg, default in zip(positional[len(positional) - len(node.defaults):], node.defaults):
                check(ast.Name(id=arg.arg), default, default.lineno)
            for arg, default in zip(node.kwonlyargs, node.kw_defaults):
                if default is not None:
                    check(ast.Name(id=arg.arg), default, default.lineno)
    return found


def scan_text(path: str, text: str) -> list[Finding]:
    suffix = Path(path).suffix.lower() or Path(path).name.lower()
    findings = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_env_defaults(raw)
        for rule, pattern in STRONG.items():
            match = pattern.search(line)
            if match and not (rule == "password in a URL" and _not_a_literal(match.group(1))):
                findings.append(Finding(path, number, rule, raw.strip()))
    if suffix == ".py":
        python = _python_findings(path, text)
        if python is not None:
            return findings + python
    if path.endswith(".min.js") or suffix not in REGEX_SUFFIXES | {".py"}:
        return findings  # prose, and vendored minified code
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_env_defaults(raw)
        for pattern in (ASSIGNED_QUOTED, *([ASSIGNED_BARE] if suffix in BARE_SUFFIXES else [])):
            for match in pattern.finditer(line):
                if secretish(match.group("name")) and not _not_a_literal(match.group("value")):
                    findings.append(Finding(path, number, f"literal value for {match.group('name')}", raw.strip()))
    return findings


def scan_files(root: Path, names: list[str]) -> list[Finding]:
    findings = []
    for name in names:
        if SECRET_FILE_NAMES.search(name) and not name.endswith((".example", ".sample", ".template")):
            findings.append(Finding(name, 0, "secret-looking file is tracked", name))
        path = root / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            continue  # binary (images, jars)
        findings.extend(scan_text(name, data.decode("utf-8", "replace")))
    return findings


def test_the_scanner_finds_what_it_must_and_only_that():
    # Built from pieces, so that this file itself holds none of them.
    pw, key = "pass" + "word", "-----BEGIN " + "RSA PRIVATE KEY-----"
    positives = {
        "a.py": f'{pw} = "hunter2hunter2"\n',
        "b.py": f'config = {{"sasl.{pw}": "s3cr3t-value", "x": 1}}\n',
        "c.yml": f"db_{pw}: hunter2hunter2\n",
        "d.sh": "export API_TOKEN=abcdef123456\n",
        "e.md": key + "\nMIIE...\n",
        "f.txt": "AKIA" + "ABCDEFGHIJKLMNOP\n",
        "g.yml": "url: postgresql://airflow:" + "hunter22@db/airflow\n",
        "h.py": "TOKEN = 'gh" + "p_" + "a" * 36 + "'\n",
        "i.py": f'USER, {pw.upper()} = "monitor", "monitor-pw"\n',
        "j.py": f'connect(user="u", {pw}="hunter2hunter2")\n',
        "k.py": f'def connect(user, {pw}="hunter2hunter2"):\n    pass\n',
    }
    for name, text in positives.items():
        assert scan_text(name, text), f"missed the secret in {name}: {text!r}"
    negatives = {
        "docker-compose.yml": f"  POSTGRES_{pw.upper()}: ${{POSTGRES_{pw.upper()}:-airflow}}\n"
                              "  URL: postgresql+psycopg2://${POSTGRES_USER:-airflow}:${POSTGRES_PASSWORD:-airflow}"
                              "@pg/a\n",
        "a.py": f'USER, {pw.upper()} = "monitor", "pw-" + unique("x")\n{pw} = secrets.token_urlsafe(18)\n'
                f'config = {{"sasl.{pw}": self.{pw}}}\n{pw}: str\n_SECRET_MARKERS = ("{pw}", "secret")\n'
                f'connect(user="u", {pw}=os.environ["PW"], {pw}_file="/run/secrets/pw")\n',
        "b.py": f'redact(base)["sasl.{pw}"] == "***"\n',
        "c.sh": f'export SIMPLE_AUTH_MANAGER_{pw.upper()}S_FILE="${{X:-$AIRFLOW_HOME/{pw}s.json}}"\n',
        "d.md": f"Login: user admin, {pw} ... (from .state/airflow/{pw}s.json)\n",
        "e.py": 'cookies = {"_token": "eyJhbGciOiJIUzUxMiJ9.e30.c2ln"}\n',
        "f.js": 'fetch(url, { credentials: "same-origin", cache: "no-store" });\n',
    }
    for name, text in negatives.items():
        assert not scan_text(name, text), f"false positive in {name}: {scan_text(name, text)}"
    assert scan_files(Path("/nonexistent"), ["deploy/id_rsa", "certs/server.key", ".env"]) and not scan_files(
        Path("/nonexistent"), [".env.example"])


def test_no_secret_is_tracked_in_the_repository(fault_row):
    git = shutil.which("git")
    if git is None or not (PROJECT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run([git, "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    names = [n for n in listed.decode().split("\0") if n]
    findings = scan_files(PROJECT, names)
    fault_row("secret scan of the tracked files", runs=1, produced=None, in_topic=None,
              note=f"{len(names)} files, {len(findings)} findings")
    assert names and not findings, "\n".join(map(str, findings))
