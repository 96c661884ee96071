"""The Queue tab: every job with its state and progress; cancel one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.i18n import DATA_CHOICES_CLASS
from sdcloud.ui.workers_panel import HEADERS as WORKER_HEADERS
from sdcloud.ui.workers_panel import worker_rows, workers_note

HEADERS = ["Job", "Kind", "State", "Progress", "Position", "Created", "Error"]
ACTIVE_STATES = ("queued", "running")
RECENT_FINISHED = 20


def _time(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%H:%M:%S")
    return str(value)


def queue_rows(jobs: Iterable[Any]) -> list[list[Any]]:
    """Table rows: running and queued jobs first (in queue order), then the most recent
    finished ones, newest first."""
    jobs = list(jobs)
    active = sorted((j for j in jobs if j.state in ACTIVE_STATES),
                    key=lambda j: (j.state != "running", j.position if j.position is not None else 0))
    finished = sorted((j for j in jobs if j.state not in ACTIVE_STATES),
                      key=lambda j: _sort_time(j.finished or j.created), reverse=True)[:RECENT_FINISHED]
    rows = []
    for j in active + finished:
        progress = f"{j.progress:.0%}"
        if j.state == "running" and j.steps:
            progress += f" (step {j.step}/{j.steps})"
        rows.append([j.id, j.kind, j.state, progress, "" if j.position is None else j.position,
                     _time(j.created), j.error or ""])
    return rows


def _sort_time(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value or 0)


def queue_tab(services: Any) -> gr.Timer:
    """Lay out the tab; returns its refresh timer, which the app runs only while the tab is open."""
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True, elem_id="queue_table")
    with gr.Row():
        job_pick = gr.Dropdown(choices=[], value=None, label="Job", min_width=200, elem_id="queue_job",
                               elem_classes=[DATA_CHOICES_CLASS])
        cancel = gr.Button("Cancel job", variant="stop", min_width=120, elem_id="queue_cancel")
        refresh = gr.Button("↻ Refresh", min_width=120, elem_id="queue_refresh")
    gr.Markdown("### Workers")
    gr.Markdown(workers_note(services), elem_id="workers_note")
    workers = gr.Dataframe(headers=WORKER_HEADERS, value=[], interactive=False, wrap=True, elem_id="workers_table")
    timer = gr.Timer(2.0, active=False)

    def load(selected: str | None) -> tuple[list[list[Any]], Any, list[list[Any]]]:
        rows = queue_rows(services.jobs())
        active = [r[0] for r in rows if r[2] in ACTIVE_STATES]
        try:
            fleet = worker_rows(services.workers())
        except Exception:  # noqa: BLE001  broker away for a moment: keep the queue view working
            fleet = []
        return rows, gr.Dropdown(choices=active, value=selected if selected in active else None), fleet

    def cancel_job(job_id: str | None) -> None:
        if not job_id:
            raise gr.Error("Pick a queued or running job first.")
        try:
            services.cancel(job_id)
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None

    for event in (refresh.click, timer.tick):
        event(load, inputs=job_pick, outputs=[table, job_pick, workers], show_progress="hidden")
    cancel.click(cancel_job, inputs=job_pick).then(load, inputs=job_pick, outputs=[table, job_pick, workers])
    return timer
