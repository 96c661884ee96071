"""Shared fixtures: a real ``sdcloud serve`` process on a free loopback port.

``sdcloud_server`` (one per session, API only, demo model, tight limits so any request stays
fast) and ``start_server`` (a factory for tests that need their own flags, data folder,
or the web UI). Servers run in a subprocess so a test can kill one with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A running ``sdcloud serve``. ``auth`` is (user, password) when the server needs one."""

    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    args: list[str]
    auth: tuple[str, str] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=120, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run (a crash)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def launch(data_dir: Path, *extra: str, auth: tuple[str, str] | None = None, ui: bool = False,
           model: str | None = "demo", env: dict[str, str] | None = None, port: int | None = None,
           wait: bool = True) -> ServerProcess:
    """Start ``sdcloud serve`` and wait until it answers (any HTTP status counts)."""
    port = port or free_port()
    args = [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data_dir), "serve", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    if model:
        args += ["--model", model]
    if not ui:
        args.append("--nowebui")
    args += list(extra)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(f"http://127.0.0.1:{port}", port, data_dir, proc, args, auth, log_path, full_env)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
        try:
            httpx.get(server.url + "/sdapi/v1/progress", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"server did not answer within {timeout}s:\n{server.log()[-4000:]}")


TIGHT_LIMITS = {"SDCLOUD_MAX_WIDTH": "256", "SDCLOUD_MAX_HEIGHT": "256", "SDCLOUD_MAX_STEPS": "40",
                "SDCLOUD_MAX_BATCH_SIZE": "4", "SDCLOUD_MAX_N_ITER": "2", "SDCLOUD_MAX_PROMPT_LENGTH": "2000",
                "SDCLOUD_MAX_BODY_BYTES": str(2 * 1024 * 1024)}


@pytest.fixture(scope="session")
def sdcloud_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One API-only server for the session: demo model, limits 256x256 / 40 steps / batch 4 / 2 MiB."""
    server = launch(tmp_path_factory.mktemp("sdcloud-server"), env=TIGHT_LIMITS)
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_server(*flags, auth=..., ui=..., data_dir=..., env=...)``; stopped after the test."""
    started: list[ServerProcess] = []

    def start(*extra: str, data_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        server = launch(data_dir or tmp_path / "data", *extra, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


SERVER_FIXTURES = {"sdcloud_server", "start_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start a server are slow (``-m "not slow"`` skips them): those that use the
    server fixtures here, and the modules that call ``launch`` themselves mark themselves."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> object:
    """An in-process engine with the demo model loaded, shared by one test module (modules that
    need another kind of engine define their own ``engine`` fixture, which takes precedence)."""
    from sdcloud.engine.engine import Engine
    from sdcloud.settings import Settings

    eng = Engine(Settings(data_dir=tmp_path_factory.mktemp("engine")))
    eng.load_model("demo")
    return eng
