"""The Queue tab: every job with its state and progress; cancel one.

The tables are plain HTML (:func:`table_html`): on a wide screen a table, on a phone one card
per job with each value under its header's name, so nothing scrolls sideways."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.i18n import DATA_CHOICES_CLASS
from sdcloud.ui.labels import JOB_KINDS, job_kind, job_state
from sdcloud.ui.progress import progress_html
from sdcloud.ui.workers_panel import HEADERS as WORKER_HEADERS
from sdcloud.ui.workers_panel import worker_rows, workers_note

HEADERS = ["Job", "Kind", "State", "Progress", "Position", "Created", "Error"]
ACTIVE_STATES = ("queued", "running")
RECENT_FINISHED = 20
KIND_LABELS = JOB_KINDS  # (kept for importers)


class Html(str):
    """A table cell that is markup already (a progress bar), not text to escape."""
TABLE_CSS = """
.sd-table { width: 100%; border-collapse: collapse; font-size: .9em; }
.sd-table th, .sd-table td { text-align: left; padding: .3em .5em; vertical-align: top;
  border-bottom: 1px solid var(--border-color-primary); overflow-wrap: anywhere; }
.sd-table th { font-weight: 600; background: var(--background-fill-secondary); }
.sd-table td.sd-table-empty { opacity: .7; padding: .5em; }
@media (max-width: 640px) {
  .sd-table thead { display: none; }
  .sd-table, .sd-table tbody, .sd-table tr, .sd-table td { display: block; width: 100%; box-sizing: border-box; }
  .sd-table tr { border: 1px solid var(--border-color-primary); border-radius: var(--radius-md);
    margin-bottom: .5em; padding: .3em 0; }
  .sd-table td { border: none; padding: .1em .6em; }
  .sd-table td::before { content: attr(data-label) ": "; font-weight: 600; }
  .sd-table td:empty { display: none; }
  .sd-table td.sd-table-empty::before { content: none; }
}
"""


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
        # the same bar as under Generate; a checkpoint job counts bytes, not steps
        bar = Html(progress_html(j, steps=not j.kind.startswith("ckpt-")))
        rows.append([j.id, job_kind(j.kind), job_state(j.state), bar, "" if j.position is None else j.position,
                     _time(j.created), j.error or ""])
    return rows


def table_html(headers: list[str], rows: list[list[Any]], elem: str, empty: str) -> str:
    """``rows`` as an HTML table (escaped); each cell carries its header for the phone layout."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td data-label="{html.escape(h)}">{v if isinstance(v, Html) else html.escape(str(v))}</td>'
                         for h, v in zip(headers, row, strict=True)) + "</tr>"
        for row in rows)
    if not rows:  # the headers stay: the reader sees what the table will hold
        body = (f'<tr><td class="sd-table-empty" id="{elem}-empty" colspan="{len(headers)}">'
                f"{html.escape(empty)}</td></tr>")
    return f'<table class="sd-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _sort_time(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value or 0)


def queue_tab(services: Any) -> gr.Timer:
    """Lay out the tab; returns its refresh timer, which the app runs only while the tab is open."""
    table = gr.HTML(table_html(HEADERS, [], "queue", "No jobs yet."), elem_id="queue_table")
    with gr.Row():
        job_pick = gr.Dropdown(choices=[], value=None, label="Job", min_width=200, elem_id="queue_job",
                               elem_classes=[DATA_CHOICES_CLASS])
        cancel = gr.Button("Cancel job", variant="stop", min_width=120, elem_id="queue_cancel")
        refresh = gr.Button("↻ Refresh", min_width=120, elem_id="queue_refresh")
    gr.Markdown("### Workers")
    gr.Markdown(workers_note(services), elem_id="workers_note")
    workers = gr.HTML(table_html(WORKER_HEADERS, [], "workers", "No workers."), elem_id="workers_table")
    timer = gr.Timer(2.0, active=False)

    def load(selected: str | None) -> tuple[str, Any, str]:
        rows = queue_rows(services.jobs())
        active = [r[0] for r in rows if r[2] in (job_state(s) for s in ACTIVE_STATES)]
        try:
            fleet = worker_rows(services.workers())
        except Exception:  # noqa: BLE001  broker away for a moment: keep the queue view working
            fleet = []
        return (table_html(HEADERS, rows, "queue", "No jobs yet."),
                gr.Dropdown(choices=active, value=selected if selected in active else None),
                table_html(WORKER_HEADERS, fleet, "workers", "No workers."))

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
