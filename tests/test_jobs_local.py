"""LocalJobQueue with trivial job kinds: FIFO order, positions, files, progress, cancel,
failures, and recovery of the SQLite journal after the process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sdcloud.engine.types import Progress
from sdcloud.errors import GenerationFailed, NotFound
from sdcloud.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobContext, LocalJobQueue
from waiting import wait_until


@pytest.fixture
def gate() -> threading.Event:
    return threading.Event()


def make_queue(tmp_path: Path, gate: threading.Event, ran: list[str]) -> LocalJobQueue:
    def record(ctx: JobContext) -> dict:
        gate.wait(10)
        ran.append(ctx.payload["name"])
        return {"name": ctx.payload["name"]}

    def steps(ctx: JobContext) -> dict:
        for i in range(1, 5):
            ctx.report(Progress(step=i, steps=4, job=0, job_count=1))
            gate.wait(10)
            if ctx.cancel.interrupted:
                break
        return {"last": i}

    def echo_file(ctx: JobContext) -> dict:
        data = ctx.input_path("init.bin").read_bytes()
        (ctx.output_dir / "copy.bin").write_bytes(data[::-1])
        return {"size": len(data)}

    def fail(ctx: JobContext) -> dict:
        if ctx.payload.get("bug"):
            raise ZeroDivisionError("boom")
        raise GenerationFailed("CUDA out of memory; lower the size or batch")

    q = LocalJobQueue(tmp_path, {"record": record, "steps": steps, "echo_file": echo_file, "fail": fail})
    q.start()
    return q


def wait_state(q: LocalJobQueue, job_id: str, state: str, timeout: float = 10) -> None:
    wait_until(lambda: q.get(job_id).state == state, timeout,
               message=lambda: f"{state}; the job is {q.get(job_id).state}")


def test_jobs_run_fifo_with_positions(tmp_path: Path, gate: threading.Event) -> None:
    ran: list[str] = []
    q = make_queue(tmp_path, gate, ran)
    try:
        jobs = [q.submit("record", {"name": n}) for n in "abcd"]
        wait_state(q, jobs[0].id, RUNNING)
        listed = q.list()
        assert [j.id for j in listed[:4]] == [j.id for j in jobs]
        assert [j.position for j in listed[:4]] == [0, 1, 2, 3]
        assert [j.state for j in listed[:4]] == [RUNNING, QUEUED, QUEUED, QUEUED]
        gate.set()
        done = [q.wait(j.id, timeout=10) for j in jobs]
        assert ran == list("abcd")
        assert [j.state for j in done] == [DONE] * 4
        assert [j.result for j in done] == [{"name": n} for n in "abcd"]
        assert all(j.position is None and j.attempts == 1 for j in done)
        assert done[0].started <= done[0].finished <= done[1].started
    finally:
        q.stop()


def test_files_are_stored_with_the_job_and_outputs_served(tmp_path: Path, gate: threading.Event) -> None:
    q = make_queue(tmp_path, gate, [])
    try:
        job = q.wait(q.submit("echo_file", {}, files={"init.bin": b"12345"}).id, timeout=10)
        assert job.state == DONE and job.result == {"size": 5}
        assert q.output_file(job.id, "copy.bin").read_bytes() == b"54321"
        assert not (tmp_path / "jobs" / job.id / "in").exists()  # inputs dropped once done
        with pytest.raises(NotFound):
            q.output_file(job.id, "../queue.sqlite")
        with pytest.raises(NotFound):
            q.output_file(job.id, "missing.png")
    finally:
        q.stop()


def test_progress_cancel_and_interrupt(tmp_path: Path, gate: threading.Event) -> None:
    q = make_queue(tmp_path, gate, [])
    try:
        running = q.submit("steps", {})
        queued = q.submit("record", {"name": "never"})
        wait_until(lambda: q.get(running.id).step >= 1, message="the first step")
        seen = q.get(running.id)
        assert seen.state == RUNNING and seen.steps == 4 and seen.progress == pytest.approx(0.25)
        assert seen.eta_seconds is not None and seen.eta_seconds >= 0
        assert [j.id for j in q.running()] == [running.id]  # running() lists the running jobs
        cancelled = q.cancel(queued.id)
        assert cancelled.state == CANCELLED and q.get(queued.id).state == CANCELLED
        q.cancel(running.id)
        gate.set()
        final = q.wait(running.id, timeout=10)
        assert final.state == CANCELLED and final.result == {"last": 1}
        # interrupt() stops the running job but it still counts as done, with its result
        gate.clear()
        again = q.submit("steps", {})
        wait_state(q, again.id, RUNNING)
        q.interrupt()
        gate.set()
        final = q.wait(again.id, timeout=10)
        assert final.state == DONE and final.interrupted and final.result == {"last": 1}
        with pytest.raises(NotFound):
            q.get("nope")
        with pytest.raises(NotFound):
            q.cancel("nope")
        assert q.cancel(again.id).state == DONE  # finished: nothing to cancel
        after = q.submit("record", {"name": "after"})
        assert q.wait(after.id, timeout=10).state == DONE  # and the queue still runs
    finally:
        q.stop()


def test_failures_are_reported_and_the_queue_keeps_going(tmp_path: Path, gate: threading.Event) -> None:
    gate.set()
    q = make_queue(tmp_path, gate, [])
    try:
        oom = q.submit("fail", {})
        bug = q.submit("fail", {"bug": True})
        after = q.submit("record", {"name": "after"})
        oom, bug, after = (q.wait(j.id, timeout=10) for j in (oom, bug, after))
        assert oom.state == FAILED and "out of memory" in oom.error and oom.error_status == 500
        assert bug.state == FAILED and "ZeroDivisionError: boom" in bug.error
        assert after.state == DONE
    finally:
        q.stop()


def test_done_callbacks_fire_once(tmp_path: Path, gate: threading.Event) -> None:
    gate.set()
    q = make_queue(tmp_path, gate, [])
    try:
        seen: list[str] = []
        job = q.submit("record", {"name": "x"})
        q.add_done_callback(job.id, lambda j: seen.append(j.state))
        q.wait(job.id, timeout=10)
        q.add_done_callback(job.id, lambda j: seen.append("late:" + j.state))
        assert seen == [DONE, "late:" + DONE]
    finally:
        q.stop()


# a server process that hangs in its first job until it is killed
_CRASHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sdcloud.jobs import LocalJobQueue

    def hang(ctx):
        (Path(sys.argv[1]) / "started").write_text(ctx.job.id)
        time.sleep(3600)

    q = LocalJobQueue(Path(sys.argv[1]), {"work": hang})
    for name in sys.argv[2:]:
        q.submit("work", {"name": name})
    q.start()
    time.sleep(3600)
""")


def run_until_first_job_starts(state: Path, *names: str) -> None:
    marker = state / "started"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, str(state), *names])
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, 60, 0.05, "the first job to start")
        assert proc.poll() is None, "crasher exited early"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_queue_resumes_after_restart(tmp_path: Path) -> None:
    run_until_first_job_starts(tmp_path, "a", "b", "c")
    ran: list[str] = []
    q = LocalJobQueue(tmp_path, {"work": lambda ctx: ran.append(ctx.payload["name"]) or {}})
    q.start()
    try:
        jobs = q.list()
        assert [j.payload["name"] for j in jobs] == ["a", "b", "c"]
        finished = [q.wait(j.id, timeout=10) for j in jobs]
        assert ran == ["a", "b", "c"]
        assert [j.state for j in finished] == [DONE] * 3
        assert [j.attempts for j in finished] == [2, 1, 1]  # "a" was running at the crash
    finally:
        q.stop()


def test_job_running_at_two_crashes_fails_with_reason(tmp_path: Path) -> None:
    run_until_first_job_starts(tmp_path, "a", "b")
    (tmp_path / "started").unlink()
    # second life: "a" is retried (and hangs again), then the process is killed again
    proc = subprocess.Popen([sys.executable, "-c", _CRASHER, str(tmp_path)])
    try:
        wait_until((tmp_path / "started").exists, 60, 0.05, "the retried job to start")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ran: list[str] = []
    q = LocalJobQueue(tmp_path, {"work": lambda ctx: ran.append(ctx.payload["name"]) or {}})
    q.start()
    try:
        a, b = sorted(q.list(finished_limit=5), key=lambda j: j.created)
        q.wait(b.id, timeout=10)
        a = q.get(a.id)
        assert a.state == FAILED and a.attempts == 2
        assert "server stopped while this job was running, 2 times" in a.error
        assert ran == ["b"]
    finally:
        q.stop()
