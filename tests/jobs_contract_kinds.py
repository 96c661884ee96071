"""Job kinds for the queue contract suite (tests/test_jobs_contract.py), in a module of their
own so a queue running in another process (a crashed server, a worker) imports the same code.

They synchronise through files named in the payload, not through in-process events, so they
work whichever process runs them: ``gate`` (the handler waits until the file exists or it is
interrupted) and ``marker`` (the handler writes it when it starts, with its attempt number).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sdcloud.errors import GenerationFailed
from sdcloud.jobs import JobContext, JobKind, ProgressEvent

POLL_S = 0.01
TRAIN_LANE = "train"


def _started(ctx: JobContext) -> None:
    if ctx.payload.get("marker"):
        Path(ctx.payload["marker"]).write_text(str(ctx.attempt))


def _wait_gate(ctx: JobContext, limit_s: float = 60.0) -> bool:
    """True once the gate file exists; False if the job was interrupted first."""
    gate = ctx.payload.get("gate")
    deadline = time.monotonic() + limit_s
    while gate and not Path(gate).exists():
        if ctx.cancel.interrupted or time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return not ctx.cancel.interrupted


def echo(ctx: JobContext) -> dict[str, Any]:
    """Returns its payload and a file it wrote, as a result key."""
    _started(ctx)
    _wait_gate(ctx)
    (ctx.output_dir / "echo.txt").write_text(json.dumps(ctx.payload.get("value")))
    return {"value": ctx.payload.get("value"), "file": ctx.output_key("echo.txt"), "attempt": ctx.attempt}


def steps(ctx: JobContext) -> dict[str, Any]:
    """``n`` steps, each reported with a loss; waits at the gate after the first step; a skip
    is counted, an interrupt ends the loop."""
    _started(ctx)
    n = int(ctx.payload.get("n", 4))
    done = skipped = 0
    for i in range(1, n + 1):
        if ctx.cancel.take_skip():
            skipped += 1
        ctx.report(ProgressEvent(step=i, total=n, metrics={"loss": round(1.0 / i, 4)}))
        done = i
        if i == 1 and not _wait_gate(ctx):
            break
        if ctx.cancel.interrupted:
            break
    return {"steps": done, "skipped": skipped + int(ctx.cancel.take_skip())}


def fail(ctx: JobContext) -> dict[str, Any]:
    raise GenerationFailed("CUDA out of memory; lower the size or batch")


def resumable(ctx: JobContext) -> dict[str, Any]:
    """A training-like job: ``n`` steps, its progress saved in ``state_dir`` after each; it
    stops at the gate after ``pause_at`` steps on its first attempt (where the test kills it)."""
    _started(ctx)
    n = int(ctx.payload.get("n", 4))
    state = ctx.state_dir / "progress.json"
    start = json.loads(state.read_text())["done"] if state.is_file() else 0
    for i in range(start + 1, n + 1):
        ctx.report(ProgressEvent(step=i, total=n, metrics={"loss": round(1.0 / i, 4)}))
        state.write_text(json.dumps({"done": i}))
        if ctx.attempt == 1 and i == int(ctx.payload.get("pause_at", 2)):
            _wait_gate(ctx, limit_s=3600)
    return {"resumed_from": start, "attempt": ctx.attempt, "steps": n}


def handlers() -> dict[str, Any]:
    return {"echo": echo, "steps": steps, "fail": fail, "resumable": resumable, "long": steps}


def kinds() -> dict[str, JobKind]:
    """The kinds with a policy of their own: ``resumable`` may run 3 times, ``long`` has a lane
    of its own (like training)."""
    return {
        "resumable": JobKind("resumable", lambda _rt: resumable, lane=TRAIN_LANE, max_attempts=3),
        "long": JobKind("long", lambda _rt: steps, lane=TRAIN_LANE),
    }
