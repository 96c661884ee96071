"""Following long work from a tab, with the one progress bar of :mod:`sdcloud.ui.progress`.

- :func:`follow_job`: one look at a queued job (a merge, a LoRA training) for a tab's
  ``gr.Timer``: the bar now and whether to keep polling;
- :func:`run_with_progress`: an action the server does while the handler waits (a model
  switch, an Extras upscale, Interrogate, applying settings) run in a thread, with a moving
  bar and the time so far until it is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.progress import busy_html, done_html, failed_html, progress_html

ACTIVE = ("queued", "running")
POLL_SECONDS = 0.25
T = TypeVar("T")


def follow_job(services: Any, job_id: str | None, **render: Any) -> tuple[str, Any, bool]:
    """(bar, job, still active) for ``job_id``; ``render`` goes to :func:`progress_html`
    (``label``, ``steps``, ``detail``, ``done``; ``done`` and ``detail`` may be callables
    of the job). ``("", None, False)`` when there is no job to follow."""
    if not job_id:
        return "", None, False
    try:
        job = services.job(job_id)
    except SdcloudError as exc:  # gone (e.g. the queue was cleared): say so, stop polling
        return failed_html(str(exc)), None, False
    kwargs = {k: (v(job) if callable(v) else v) for k, v in render.items()}
    return progress_html(job, **kwargs), job, job.state in ACTIVE


class Outcome(Generic[T]):
    """What :func:`run_with_progress` yields: the bar, and the result once there is one."""

    def __init__(self, bar: str, done: bool = False, value: T | None = None) -> None:
        self.bar, self.done, self.value = bar, done, value


def run_with_progress(work: Callable[[], T], label: str, done: Callable[[T], str] | str = "Done",
                      poll_s: float = POLL_SECONDS) -> Iterator[Outcome[T]]:
    """Run ``work`` in a thread; yield a moving bar ("Loading demo-xl · 3s") every ``poll_s``
    while it runs, then the full bar with ``done`` (text, or text from the result) and the
    result. A ``SdcloudError`` or ``gr.Error`` yields the red bar, then is raised as
    ``gr.Error`` (Gradio's message box) with the same words."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001  handed to the generator below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"ui:{label}", daemon=True)
    started = time.monotonic()
    thread.start()
    yield Outcome(busy_html(label))
    while thread.is_alive():
        thread.join(poll_s)
        if thread.is_alive():
            yield Outcome(busy_html(label, time.monotonic() - started))
    error = box.get("error")
    if isinstance(error, SdcloudError | gr.Error):
        message = error.message if isinstance(error, gr.Error) else str(error)
        yield Outcome(failed_html(str(message)))
        raise gr.Error(str(message)) from None
    if error is not None:
        yield Outcome(failed_html("see the server log"))
        raise error
    value = box["value"]
    yield Outcome(done_html(done(value) if callable(done) else done), True, value)
