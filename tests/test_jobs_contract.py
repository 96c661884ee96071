"""The job-queue contract: what every ``JobQueue`` backend does, checked the same way on each.

Backends: ``LocalJobQueue`` (SQLite journal, worker threads) and ``FleetJobQueue`` (issue 14:
Celery over a real loopback ``redis-server``, the jobs run by real worker processes, one per
lane, shared by the module's tests; skipped where redis-server is not installed). A new
backend adds a ``Harness`` subclass and an entry in ``BACKENDS``; every test here then runs on
it too. The job kinds live in ``jobs_contract_kinds.py`` and synchronise through files, so
they work in whatever process the backend runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jobs_contract_kinds import handlers, kinds
from sdcloud.errors import BadRequest, NotFound
from sdcloud.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobQueue, LocalJobQueue, ProgressEvent
from sdcloud.jobs.base import job_file_name
from waiting import wait_until

TESTS_DIR = Path(__file__).parent


class Harness:
    """One backend under test. ``open()`` gives a started queue over the backend's storage
    (a second ``open()`` after ``crash_while_running`` is the restarted server or worker)."""

    name = "?"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.queues: list[JobQueue] = []

    def open(self) -> JobQueue:
        raise NotImplementedError

    def crash_while_running(self, submissions: list[tuple[str, dict]], marker: Path) -> None:
        """Submit ``submissions`` in another process, wait until ``marker`` exists (the first
        job has started), then kill that process with SIGKILL."""
        raise NotImplementedError

    def close(self) -> None:
        for q in self.queues:
            q.stop(timeout=5)


class LocalHarness(Harness):
    name = "local"

    def open(self) -> JobQueue:
        q = LocalJobQueue(self.tmp / "state", handlers(), kinds=kinds())
        q.start()
        self.queues.append(q)
        return q

    def crash_while_running(self, submissions: list[tuple[str, dict]], marker: Path) -> None:
        script = textwrap.dedent("""
            import json, sys, time
            from pathlib import Path
            sys.path.insert(0, sys.argv[1])
            from jobs_contract_kinds import handlers, kinds
            from sdcloud.jobs import LocalJobQueue

            q = LocalJobQueue(Path(sys.argv[2]), handlers(), kinds=kinds())
            for kind, payload in json.loads(sys.argv[3]):
                q.submit(kind, payload)
            q.start()
            time.sleep(3600)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script, str(TESTS_DIR), str(self.tmp / "state"),
                                 json.dumps(submissions)])
        try:
            wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=60, message="the first job")
            assert proc.poll() is None, "the crashing process exited by itself"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


FLEET_TIMEOUT_S = 4.0  # the fleet's heartbeat timeout here: a killed worker's job runs again after it
STATE_SYNC_S = 1.5  # a worker mirrors a job's state_dir to the store every 0.5 s; the kill waits for it
WORKER_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from jobs_contract_kinds import handlers, kinds
    from sdcloud.fleet.worker import WorkerRuntime, run_worker
    from sdcloud.settings import Settings
    from sdcloud.storage.local import LocalStore

    settings = Settings(data_dir=Path(sys.argv[2]))
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, sys.argv[3], LocalStore(Path(sys.argv[4])), name=sys.argv[5],
                            handlers=handlers(), kinds=kinds(), lanes=[sys.argv[6]])
    run_worker(runtime, loglevel="WARNING")
""")


class Fleet:
    """One redis-server and one worker process per lane (gpu, train) for the module's tests:
    real ``sdcloud.fleet.worker`` processes running the contract kinds (no engine, no torch)."""

    def __init__(self, root: Path) -> None:
        from fleet_helpers import RedisServer

        self.root = root
        self.redis = RedisServer(root / "redis")
        self.redis.start()
        self.store = root / "store"
        self.store.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}  # worker name -> process
        self.lane_of: dict[str, str] = {}
        self.count = 0
        for lane in ("gpu", "train"):
            self.add(lane)
        self.wait_live(set(self.procs))

    def add(self, lane: str) -> str:
        self.count += 1
        name = f"{lane}-{self.count}"
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (kept open by the child)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(TESTS_DIR), str(self.root / name), self.redis.url,
             str(self.store), name, lane], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.lane_of[name] = lane
        return name

    def live(self) -> dict[str, dict[str, Any]]:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        try:
            out = {}
            for key in client.scan_iter(match="sdcloud:worker:*"):
                raw = client.get(key)
                if raw:
                    w = json.loads(raw)
                    out[w["name"]] = w
            return out
        finally:
            client.close()

    def wait_live(self, names: set[str]) -> None:
        wait_until(lambda: names <= set(self.live()), timeout=120, interval=0.1,
                   message=lambda: f"workers {names - set(self.live())} (see {self.root}/*.log)")

    def kill_running(self, job_ids: set[str]) -> None:
        """SIGKILL the worker running one of ``job_ids`` and start another in its lane."""
        victim = wait_until(lambda: next((n for n, w in self.live().items() if w.get("job") in job_ids), None),
                            timeout=30, message="the worker running the job")
        proc = self.procs.pop(victim)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.add(self.lane_of[victim])

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.redis.stop()


class FleetHarness(Harness):
    """The front (``FleetJobQueue``, journal under this test's folder) in the test process; the
    jobs run on the module's worker processes. The crashing process is the worker running the
    job: it is SIGKILLed and replaced, the front's reaper gives the job a new attempt."""

    name = "fleet"
    fleet: Fleet

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.front: Any = None

    def open(self) -> JobQueue:
        if self.front is None:
            from sdcloud.fleet.queue import FleetJobQueue
            from sdcloud.storage.local import LocalStore

            self.front = FleetJobQueue(self.tmp / "state", self.fleet.redis.url, LocalStore(self.fleet.store),
                                       LocalJobQueue(self.tmp / "state", {}), worker_timeout=FLEET_TIMEOUT_S,
                                       max_attempts=2, remote_kinds=handlers(), kinds=kinds())
            self.front.start()
            self.queues.append(self.front)
        return self.front

    def crash_while_running(self, submissions: list[tuple[str, dict]], marker: Path) -> None:
        q = self.open()
        for kind, payload in submissions:
            q.submit(kind, payload)
        wait_until(marker.exists, timeout=60, message="the first job")
        time.sleep(STATE_SYNC_S)
        self.fleet.kill_running({j.id for j in q.list() if not j.finished_state})

    def close(self) -> None:
        if self.front is not None:  # nothing of this test keeps a worker busy for the next one
            for job in self.front.list():
                if not job.finished_state:
                    self.front.cancel(job.id)
        super().close()


BACKENDS = [LocalHarness, FleetHarness]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("celery")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (scripts/test.sh installs it)")
    f = Fleet(tmp_path_factory.mktemp("contract-fleet"))
    yield f
    f.close()


@pytest.fixture(params=BACKENDS, ids=lambda h: h.name)
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param is FleetHarness:
        FleetHarness.fleet = request.getfixturevalue("fleet")
    harness = request.param(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A gate file: jobs that were given it wait until it exists."""
    return tmp_path / "gate"


def state_of(q: JobQueue, job_id: str, state: str, timeout: float = 20) -> None:
    wait_until(lambda: q.get(job_id).state == state, timeout, message=lambda: f"{state}: {q.get(job_id).state}")


def test_submit_wait_result_and_output_file(backend: Harness) -> None:
    q = backend.open()
    job = q.submit("echo", {"value": {"a": [1, 2]}})
    assert job.state in (QUEUED, RUNNING) and q.get(job.id).kind == "echo"
    done = q.wait(job.id, timeout=20)
    assert done.state == DONE and done.attempts == 1 and done.error is None
    assert done.result["value"] == {"a": [1, 2]}
    name = job_file_name(done.result["file"])  # a result key, never a server path
    assert name == "echo.txt" and json.loads(q.output_file(job.id, name).read_text()) == {"a": [1, 2]}
    json.dumps(done.to_dict())  # the public view is JSON as is
    with pytest.raises(NotFound):
        q.output_file(job.id, "../queue.sqlite")
    with pytest.raises(NotFound):
        q.get("no-such-job")
    with pytest.raises(BadRequest, match="unknown job kind"):
        q.submit("no-such-kind", {})


def test_fifo_positions_and_running_list(backend: Harness, gate: Path) -> None:
    q = backend.open()
    jobs = [q.submit("steps", {"gate": str(gate), "n": 2}) for _ in range(3)]
    state_of(q, jobs[0].id, RUNNING)
    listed = q.list()
    assert [j.id for j in listed[:3]] == [j.id for j in jobs]
    assert [j.position for j in listed[:3]] == [0, 1, 2]
    assert [j.id for j in q.running()] == [jobs[0].id]
    gate.touch()
    done = [q.wait(j.id, timeout=20) for j in jobs]
    assert [j.state for j in done] == [DONE] * 3 and not q.running()
    assert done[0].finished <= done[1].started and done[1].finished <= done[2].started


def test_progress_event_is_serialisable_with_metrics(backend: Harness, gate: Path) -> None:
    q = backend.open()
    job = q.submit("steps", {"gate": str(gate), "n": 4})
    seen = wait_until(lambda: (j := q.get(job.id)).step >= 1 and j, message="the first step")
    event = seen.event
    assert (event.step, event.total, dict(event.metrics)) == (1, 4, {"loss": 1.0})
    assert seen.progress == pytest.approx(0.25) and seen.eta_seconds is not None
    assert ProgressEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    gate.touch()
    done = q.wait(job.id, timeout=20)
    assert done.state == DONE and done.progress == 1.0 and done.metrics == {"loss": 0.25}


def test_cancel_queued_and_running(backend: Harness, gate: Path) -> None:
    q = backend.open()
    running = q.submit("steps", {"gate": str(gate)})
    queued = q.submit("echo", {"value": "never"})
    state_of(q, running.id, RUNNING)
    cancelled = q.cancel(queued.id)
    assert cancelled.state == CANCELLED and q.get(queued.id).result is None
    q.cancel(running.id)  # stops it between steps; it does not need the gate
    final = q.wait(running.id, timeout=20)
    assert final.state == CANCELLED and final.error == "cancelled while running" and final.result == {
        "steps": 1, "skipped": 0}
    assert q.cancel(running.id).state == CANCELLED  # finished: nothing more to cancel
    after = q.submit("echo", {"value": 1})
    assert q.wait(after.id, timeout=20).state == DONE  # and the queue still runs


def test_interrupt_and_skip_are_scoped_to_one_job(backend: Harness, gate: Path) -> None:
    q = backend.open()
    short = q.submit("steps", {"gate": str(gate), "n": 3})
    long = q.submit("long", {"gate": str(gate), "n": 3})  # another lane: runs side by side
    state_of(q, short.id, RUNNING)
    state_of(q, long.id, RUNNING)
    assert {j.id for j in q.running()} == {short.id, long.id}
    q.skip(short.id)
    q.interrupt(long.id)
    stopped = q.wait(long.id, timeout=20)
    assert stopped.state == DONE and stopped.interrupted and stopped.result["steps"] == 1
    assert q.get(short.id).state == RUNNING  # untouched by the other job's interrupt
    gate.touch()
    finished = q.wait(short.id, timeout=20)
    assert finished.state == DONE and not finished.interrupted
    assert finished.result == {"steps": 3, "skipped": 1}


def test_wait_returns_at_the_timeout(backend: Harness, gate: Path) -> None:
    q = backend.open()
    job = q.submit("steps", {"gate": str(gate)})
    assert q.wait(job.id, timeout=0.2).state in (QUEUED, RUNNING)
    gate.touch()
    assert q.wait(job.id, timeout=20).state == DONE


def test_done_callbacks_fire_once_for_every_ending(backend: Harness, gate: Path) -> None:
    q = backend.open()
    seen: list[tuple[str, str]] = []
    running = q.submit("steps", {"gate": str(gate)})
    queued = q.submit("echo", {})
    failing = q.submit("fail", {})
    for job in (running, queued, failing):
        q.add_done_callback(job.id, lambda j: seen.append((j.id, j.state)))
    q.cancel(queued.id)
    gate.touch()
    q.wait(running.id, timeout=20)
    q.wait(failing.id, timeout=20)
    wait_until(lambda: len(seen) == 3, message="three callbacks")
    assert sorted(seen) == sorted([(queued.id, CANCELLED), (running.id, DONE), (failing.id, FAILED)])
    q.add_done_callback(running.id, lambda j: seen.append(("late", j.state)))  # already finished: at once
    assert seen[-1] == ("late", DONE) and len(seen) == 4


def test_a_failure_is_reported_and_the_queue_goes_on(backend: Harness) -> None:
    q = backend.open()
    bad = q.wait(q.submit("fail", {}).id, timeout=20)
    assert bad.state == FAILED and "out of memory" in bad.error and bad.error_status == 500
    assert q.wait(q.submit("echo", {"value": 2}).id, timeout=20).result["value"] == 2


def test_a_job_cut_off_by_a_crash_runs_again(backend: Harness, tmp_path: Path, gate: Path) -> None:
    marker = tmp_path / "started"
    backend.crash_while_running(
        [("echo", {"value": "first", "gate": str(gate), "marker": str(marker)}), ("echo", {"value": "second"})],
        marker)
    gate.touch()
    q = backend.open()
    jobs = sorted(q.list(finished_limit=5), key=lambda j: j.created)
    assert [j.payload["value"] for j in jobs] == ["first", "second"]
    first, second = (q.wait(j.id, timeout=20) for j in jobs)
    assert (first.state, first.attempts, first.result["attempt"]) == (DONE, 2, 2)
    assert (second.state, second.attempts) == (DONE, 1)


def test_a_resumable_job_finds_its_state_after_a_crash(backend: Harness, tmp_path: Path, gate: Path) -> None:
    marker = tmp_path / "started"
    backend.crash_while_running([("resumable", {"n": 4, "pause_at": 2, "gate": str(gate),
                                                "marker": str(marker)})], marker)
    q = backend.open()
    (job,) = q.list(finished_limit=5)
    wait_until(lambda: marker.read_text() == "2", message="the second attempt")
    done = q.wait(job.id, timeout=20)
    assert done.state == DONE and done.attempts == 2
    assert done.result == {"resumed_from": 2, "attempt": 2, "steps": 4}


def test_a_job_cut_off_more_often_than_its_kind_allows_fails_with_the_reason(backend: Harness, tmp_path: Path,
                                                                              gate: Path) -> None:
    marker = tmp_path / "started"
    backend.crash_while_running([("echo", {"value": "x", "gate": str(gate), "marker": str(marker)})], marker)
    marker.unlink()
    backend.crash_while_running([], marker)  # the restarted process runs it again and is killed again
    gate.touch()
    q = backend.open()
    (job,) = q.list(finished_limit=5)
    job = q.wait(job.id, timeout=20)
    assert job.state == FAILED and job.attempts == 2  # echo's kind allows 2 runs
    assert "stopped while this job was running, 2 times" in job.error
