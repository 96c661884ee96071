"""The live progress bar shown while a job is queued or running (pure HTML, no Gradio)."""

from __future__ import annotations

import html
from typing import Any


def _eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"ETA {minutes}:{secs:02d}" if minutes else f"ETA {secs}s"


def progress_html(job: Any) -> str:
    """Render one job's state as A1111's bar: "Queued (#3 in line)", "Step 4/20 · 35% · ETA 6s".

    ``job`` is anything with the queue's ``Job`` attributes (state, progress, step, steps,
    eta_seconds, position, error); ``None`` renders nothing.
    """
    if job is None:
        return ""
    state = getattr(job, "state", "")
    fraction = max(0.0, min(1.0, float(getattr(job, "progress", 0.0) or 0.0)))
    if state == "queued":
        position = getattr(job, "position", None)  # 1 = next to run
        text = "Queued" + (f" (#{position} in line)" if position else "")
    elif state == "running":
        step, steps = getattr(job, "step", 0) or 0, getattr(job, "steps", 0) or 0
        parts = [f"Step {step}/{steps}" if steps else "Starting", f"{fraction:.0%}",
                 _eta(getattr(job, "eta_seconds", None))]
        text = " · ".join(p for p in parts if p)
    elif state == "done":
        fraction, text = 1.0, "Interrupted" if getattr(job, "interrupted", False) else "Done"
    elif state == "failed":
        text = f"Failed: {getattr(job, 'error', '') or 'unknown error'}"
    elif state == "cancelled":
        text = "Interrupted"
    else:
        text = str(state)
    return bar_html(state, fraction, text)


def bar_html(state: str, fraction: float, text: str) -> str:
    """The bar itself: ``state`` (queued, running, done, failed, cancelled) sets its colour,
    ``fraction`` (0-1) its fill; ``text`` is shown on it."""
    css_state = state if state in ("queued", "running", "done", "failed", "cancelled") else "other"
    fraction = max(0.0, min(1.0, fraction))
    return (
        f'<div class="sd-progress sd-{css_state}" role="progressbar" aria-valuemin="0" '
        f'aria-valuemax="100" aria-valuenow="{fraction * 100:.0f}">'
        f'<div class="sd-progress-fill" style="width:{fraction * 100:.1f}%"></div>'
        f'<span class="sd-progress-text">{html.escape(text)}</span></div>'
    )
