"""Scale-out on one machine: throughput with 1, 2 and 4 CPU workers against one in-process
server, the latency the broker path adds per job, and recovery after a worker is killed.

1. Baseline: ``sdcloud serve --model demo`` (jobs run in the server). ``--jobs`` txt2img jobs
   submitted at once to ``/api/txt2img``: images per second. Then ``--runs`` jobs one at a
   time (submit, wait): median latency.
2. Fleet: a loopback ``redis-server``, ``serve --broker`` and 1, 2, 4 ``sdcloud worker``
   processes: the same two measurements. Prints throughput as a ratio of the baseline and
   the added median latency of the broker path (target <= 50 ms).
3. Recovery: a longer job, the worker running it SIGKILLed mid-job; seconds until the job
   runs again on another worker and until it is done (target < 30 s).

On a CPU the workers share the same cores, so throughput cannot scale like separate GPUs;
what this shows is the overhead and that nothing is lost or serialised by the broker.

    .venv/bin/python bench/scaleout.py [--jobs 40] [--runs 15] [--size 64] [--steps 1] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "SDCLOUD_WORKER_TIMEOUT": "8"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(data: Path, *args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), *args],
                                stdout=fh, stderr=subprocess.STDOUT, env=ENV)


def serve(data: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = cli(data, "serve", "--model", "demo", "--nowebui", "--port", str(port), "--log-level", "warning",
               *extra, log=data.parent / f"serve-{port}.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx.get(url + "/sdapi/v1/progress", timeout=2)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {data.parent}") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish")
        time.sleep(0.005)


def throughput(url: str, body: dict, jobs: int) -> float:
    """Images per second for ``jobs`` jobs submitted at once."""
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        ids = [client.post("/api/txt2img", json={**body, "seed": i}).json()["id"] for i in range(jobs)]
        states = [wait_done(client, i)["state"] for i in ids]
        assert states == ["done"] * jobs, states
        return jobs / (time.perf_counter() - started)


def latencies(urls: list[str], body: dict, runs: int) -> list[float]:
    """Median seconds of one job alone (submit, wait) on each server, alternated job by job so
    every server sees the same machine load."""
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    try:
        for c in clients:
            for _ in range(3):  # warm-up
                wait_done(c, c.post("/api/txt2img", json=body).json()["id"])
        lat: list[list[float]] = [[] for _ in urls]
        for _ in range(runs):
            for i, c in enumerate(clients):
                t = time.perf_counter()
                wait_done(c, c.post("/api/txt2img", json=body).json()["id"])
                lat[i].append(time.perf_counter() - t)
        return [statistics.median(x) for x in lat]
    finally:
        for c in clients:
            c.close()


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "redis").mkdir(parents=True)
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(root / "redis"),
             "--appendonly", "yes", "--save", "", "--requirepass", "bench"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.broker = f"redis://:bench@127.0.0.1:{self.port}/0"
        time.sleep(0.5)
        self.server, self.url = serve(root / "api", "--broker", self.broker, "--store", str(root / "store"))
        self.workers: dict[str, subprocess.Popen] = {}

    def add_workers(self, n: int) -> None:
        for _ in range(n):
            name = f"w{len(self.workers) + 1}"
            self.workers[name] = cli(self.root / name, "worker", "--broker", self.broker, "--name", name,
                                     "--model", "demo", "--device", "cpu", log=self.root / f"{name}.log")
        deadline = time.monotonic() + 300
        while True:
            live = {w["name"] for w in httpx.get(self.url + "/api/workers").json()["workers"]}
            if set(self.workers) <= live:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"workers did not join; see {self.root}")
            time.sleep(0.3)

    def close(self) -> None:
        for proc in self.workers.values():
            stop(proc, signal.SIGKILL)
        stop(self.server)
        stop(self.redis)


def recovery(fleet: Fleet, body: dict) -> tuple[float, float]:
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        job_id = client.post("/api/txt2img", json={**body, "steps": 40, "width": 96, "height": 96}).json()["id"]
        while True:
            job = client.get(f"/api/jobs/{job_id}").json()
            if job["state"] == "running" and job["step"] > 0:
                break
            time.sleep(0.02)
        victim = next(w["name"] for w in client.get("/api/workers").json()["workers"] if w["job"] == job_id)
        fleet.workers.pop(victim).send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        rerun = None
        while True:
            job = client.get(f"/api/jobs/{job_id}").json()
            if rerun is None and job["attempts"] >= 2:
                rerun = time.perf_counter() - killed
            if job["state"] in ("done", "failed"):
                assert job["state"] == "done", job
                return rerun or 0.0, time.perf_counter() - killed
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    body = {"prompt": "a fox", "width": args.size, "height": args.size, "steps": args.steps, "sampler_name": "Euler"}
    counts = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="sdcloud-bench-") as tmp:
        root = Path(tmp)
        local, url = serve(root / "local")
        fleet = Fleet(root / "fleet")
        try:
            for n in counts:
                fleet.add_workers(n - len(fleet.workers))
                if n == counts[0]:
                    base_lat, lat = latencies([url, fleet.url], body, args.runs)
                    print(f"median job latency: in-process {base_lat * 1000:.1f} ms, through the broker with 1 "
                          f"worker {lat * 1000:.1f} ms (alternated, {args.runs} jobs each)")
                    added = lat - base_lat
                    verdict = "ok" if added <= 0.050 else "over target"
                    print(f"broker path adds {added * 1000:.1f} ms per job (target <= 50 ms: {verdict})")
                base_rate = throughput(url, body, args.jobs)  # measured right before, same load
                rate = throughput(fleet.url, body, args.jobs)
                print(f"{n} worker(s): {rate:6.2f} img/s vs in-process {base_rate:6.2f} img/s "
                      f"({rate / base_rate:4.2f}x)")
            stop(local)
            if len(fleet.workers) >= 2:
                rerun, done = recovery(fleet, body)
                print(f"worker killed mid-job: running again after {rerun:.1f} s, done after {done:.1f} s "
                      "(target < 30 s)")
        finally:
            stop(local)
            fleet.close()


if __name__ == "__main__":
    main()
