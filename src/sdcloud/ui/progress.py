"""The one progress bar of the UI (pure HTML, no Gradio): generation, the queue table, merge,
LoRA training, model switch, Extras, Interrogate and Settings all show their progress with it.

- :func:`progress_html` draws a queued job's bar ("Queued (#3 in line)", "Step 4/20 · 35% ·
  ETA 6s", "Done", "Failed: ...");
- :func:`busy_html` draws an action that runs in the server without steps of its own
  ("Loading demo-xl · 3s");
- :func:`bar_html` is the bar itself, :func:`bar_text` reads its text back.

:mod:`sdcloud.ui.follow` polls jobs and runs actions with these bars.
"""

from __future__ import annotations

import html
import re
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
BAR_CSS = """
.sd-progress { position: relative; min-height: 1.8em; border-radius: var(--radius-md);
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);
  overflow: hidden; }
.sd-progress-fill { position: absolute; top: 0; bottom: 0; left: 0; background: var(--color-accent);
  opacity: .35; transition: width .2s; }
.sd-failed .sd-progress-fill { background: var(--error-background-fill); opacity: 1; }
.sd-done .sd-progress-fill { transition: none; }
.sd-busy .sd-progress-fill { width: 30% !important; animation: sd-busy 1.4s ease-in-out infinite alternate; }
@keyframes sd-busy { from { left: 0; } to { left: 70%; } }
.sd-progress-text { position: relative; display: block; padding: .25em .6em; font-size: .9em;
  overflow-wrap: anywhere; }
.sd-table .sd-progress { min-height: 1.5em; min-width: 8em; }
.sd-table .sd-progress-text { padding: .1em .4em; font-size: .85em; }
"""
"""The bar's stylesheet (part of the page's CSS)."""


def _eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"ETA {minutes}:{secs:02d}" if minutes else f"ETA {secs}s"


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{secs}s"


def progress_html(job: Any, *, label: str = "", steps: bool = True, detail: str = "",
                  done: str = "") -> str:
    """Render one job's state as A1111's bar: "Queued (#3 in line)", "Step 4/20 · 35% · ETA 6s".

    ``job`` is anything with the queue's ``Job`` attributes (state, progress, step, steps,
    eta_seconds, position, error); ``None`` renders nothing. ``label`` names the work while it
    runs ("Merging: 35% · ETA 6s"); ``steps=False`` leaves out the step count (a merge counts
    bytes, not steps); ``detail`` is added while it runs ("loss 0.1234"); ``done`` replaces
    "Done" at the end.
    """
    if job is None:
        return ""
    state = getattr(job, "state", "")
    fraction = max(0.0, min(1.0, float(getattr(job, "progress", 0.0) or 0.0)))
    if state == "queued":
        position = getattr(job, "position", None)  # 1 = next to run
        text = "Queued" + (f" (#{position} in line)" if position else "")
    elif state == "running":
        step, total = getattr(job, "step", 0) or 0, getattr(job, "steps", 0) or 0
        if steps:
            parts = [f"Step {step}/{total}" if total else "Starting", f"{fraction:.0%}"]
        else:
            parts = [f"{fraction:.0%}" if fraction else "Starting"]
        parts += [detail, _eta(getattr(job, "eta_seconds", None))]
        text = " · ".join(p for p in parts if p)
        if label:
            text = f"{label}: {text}"
    elif state == "done":
        interrupted = getattr(job, "interrupted", False)
        fraction, text = 1.0, "Interrupted" if interrupted else (done or "Done")
    elif state == "failed":
        text = f"Failed: {getattr(job, 'error', '') or 'unknown error'}"
    elif state == "cancelled":
        text = "Interrupted"
    else:
        text = str(state)
    return bar_html(state, fraction, text)


def busy_html(label: str, elapsed_s: float | None = None) -> str:
    """An action at work with no steps to count (a model loading, an image upscaling): a
    moving bar with the time so far, "Loading demo-xl · 3s"."""
    text = label if elapsed_s is None else f"{label} · {_elapsed(elapsed_s)}"
    return bar_html("running", 0.0, text, busy=True)


def done_html(text: str) -> str:
    """A finished action's full bar ("Loaded demo-xl", "Applied: Clip skip 2")."""
    return bar_html("done", 1.0, text)


def failed_html(text: str) -> str:
    return bar_html("failed", 0.0, f"Failed: {text}")


def bar_html(state: str, fraction: float, text: str, busy: bool = False) -> str:
    """The bar itself: ``state`` (queued, running, done, failed, cancelled) sets its colour,
    ``fraction`` (0-1) its fill; ``text`` is shown on it; ``busy`` makes the fill move to and
    fro (work whose share done is not known)."""
    css_state = state if state in STATES else "other"
    fraction = max(0.0, min(1.0, fraction))
    classes = f"sd-progress sd-{css_state}" + (" sd-busy" if busy else "")
    now = "" if busy else f' aria-valuenow="{fraction * 100:.0f}"'
    return (
        f'<div class="{classes}" role="progressbar" aria-valuemin="0" aria-valuemax="100"{now}>'
        f'<div class="sd-progress-fill" style="width:{fraction * 100:.1f}%"></div>'
        f'<span class="sd-progress-text">{html.escape(text)}</span></div>'
    )


_TEXT = re.compile(r'<span class="sd-progress-text">(.*?)</span>', re.S)


def bar_text(markup: str) -> str:
    """The text a bar shows ("" for no bar)."""
    found = _TEXT.search(markup or "")
    return html.unescape(found.group(1)) if found else ""
