"""Real ``redis-server`` and ``sdcloud worker`` processes for the scale-out tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import free_port

HAVE_REDIS = shutil.which("redis-server") is not None


class RedisServer:
    """redis-server on 127.0.0.1 (random port, temp dir, AOF on, a password)."""

    def __init__(self, folder: Path, password: str = "s3cret-test-pw") -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--requirepass", self.password,
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class WorkerProcess:
    def __init__(self, data_dir: Path, broker: str, name: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"worker-{name}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data_dir), "worker", "--broker", broker,
                "--name", name, "--device", "cpu", "--log-level", "info", *extra]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    **(env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_workers(client: httpx.Client, names: set[str], timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live = {w["name"] for w in client.get("/api/workers").json()["workers"]}
        if names <= live:
            return
        assert time.monotonic() < deadline, f"workers {names - live} did not join"
        time.sleep(0.3)


def wait_jobs(client: httpx.Client, ids: list[str], timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    done: dict[str, dict] = {}
    while pending:
        for job_id in list(pending):
            job = client.get(f"/api/jobs/{job_id}").json()
            if job["state"] in ("done", "failed", "cancelled"):
                done[job_id] = job
                pending.remove(job_id)
        if pending:
            assert time.monotonic() < deadline, f"{len(pending)} jobs unfinished: {pending[:3]}"
            time.sleep(0.2)
    return [done[i] for i in ids]
