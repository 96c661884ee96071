"""The GPU owner: one holder at a time, re-entrant, and a short interactive job gets the GPU
at a long background job's next step instead of after the whole run."""

from __future__ import annotations

import threading

import pytest

from sdcloud.jobs.gpu import BACKGROUND, INTERACTIVE, GpuOwner
from waiting import wait_until


def test_generation_runs_between_the_steps_of_a_long_job() -> None:
    gpu = GpuOwner()
    timeline: list[str] = []
    step_done = threading.Event()
    go_on = threading.Event()

    def training() -> None:
        with gpu.hold(BACKGROUND):
            for step in range(1, 4):
                timeline.append(f"train {step}")
                if step == 1:
                    step_done.set()
                    go_on.wait(10)
                gpu.yield_point()

    def txt2img() -> None:
        with gpu.hold(INTERACTIVE):
            with gpu.hold(INTERACTIVE):  # loading a model inside a generation: re-entrant
                timeline.append("txt2img")

    trainer = threading.Thread(target=training)
    trainer.start()
    assert step_done.wait(10)
    user = threading.Thread(target=txt2img)
    user.start()
    wait_until(lambda: gpu.waiting == 1, message="txt2img to wait for the GPU")
    assert timeline == ["train 1"]  # nobody takes the GPU from its holder in the middle of a step
    go_on.set()
    user.join(10)
    trainer.join(10)
    assert timeline == ["train 1", "txt2img", "train 2", "train 3"]


def test_same_priority_goes_in_arrival_order_and_no_yield_to_equals() -> None:
    gpu = GpuOwner()
    order: list[str] = []
    gpu.acquire(INTERACTIVE)
    threads = []
    for name in ("a", "b", "c"):
        t = threading.Thread(target=lambda n=name: (gpu.acquire(INTERACTIVE), order.append(n), gpu.release()))
        t.start()
        threads.append(t)
        wait_until(lambda n=len(threads): gpu.waiting == n, message=f"{name} to queue")
    assert gpu.yield_point() is False  # only a more urgent user makes a holder step aside
    gpu.release()
    for t in threads:
        t.join(10)
    assert order == ["a", "b", "c"]


def test_release_by_a_thread_that_does_not_hold_it_is_refused() -> None:
    gpu = GpuOwner()
    with pytest.raises(RuntimeError, match="does not hold"):
        gpu.release()
