"""The browser tests' shared parts: headless Chromium over the DevTools protocol, and `airflow api-server` with
simple-auth-manager users, started for a test module and stopped after it."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support import PROJECT, airflow_env




def chromium_binary() -> str | None:
    """Chromium's path; installs the Debian packages (scripts/system_deps.sh) when it is missing."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found is None:
        subprocess.run(["bash", str(PROJECT / "scripts" / "system_deps.sh")], capture_output=True, timeout=900)
        found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    return found


class Browser:
    """Just enough of a CDP client: navigate, evaluate, type, screenshot."""

    def __init__(self, binary: str, profile: Path, width: int = 1440, height: int = 1000):
        import websocket  # websocket-client

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.console: list[str] = []

    def send(self, method: str, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; page errors: {self.console[-3:]}")
            time.sleep(0.25)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        time.sleep(0.2)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def type_into(self, selector: str, text: str) -> None:
        self.wait_for(f"!!document.querySelector({json.dumps(selector)})", what=selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def api_server(airflow_home: Path, kafka_bootstrap: str, root: Path, users: dict[str, tuple[str, str]],
               extra_env: dict[str, str]) -> Iterator[str]:
    """``airflow api-server`` on a free port with ``users`` (name -> (role, password)); yields its base URL."""
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in users.items()}))
    port = free_port()
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{role}" for n, (role, _) in users.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        **extra_env,
    })
    log_path = root / "api-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), "api-server", "--port", str(port),
             "--host", "127.0.0.1"],
            env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("api-server did not start:\n" + log_path.read_text()[-5000:])
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


def token_for(url: str, user: str, password: str) -> str:
    """A JWT for ``user`` from the simple auth manager's token endpoint."""
    response = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@contextmanager
def chromium(profile: Path) -> Iterator["Browser"]:
    """A headless Chromium (skips the test when it cannot be installed), closed afterwards."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed and scripts/system_deps.sh could not install it")
    browser = Browser(binary, profile)
    try:
        yield browser
    finally:
        browser.close()


def log_in(browser: "Browser", url: str, user: str, password: str, next_path: str) -> None:
    """Airflow's login form, as a person fills it in; waits for the redirect to ``next_path``."""
    browser.goto(f"{url}/auth/login?next={next_path}")
    browser.type_into("input[name=username]", user)
    browser.type_into("input[name=password]", password)
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    browser.wait_for(f"location.pathname.endsWith({json.dumps(next_path.rstrip('/'))}) || "
                     f"location.pathname.endsWith({json.dumps(next_path)})", what="redirect after login")
