"""What a user reads in the UI: words instead of the API's internal names (merge methods, VAE
source, LR schedulers, job kinds and states, applied options), one progress bar for every long
action, and a status line that is read again at each page load."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from sdcloud.errors import BadRequest
from sdcloud.ui.follow import follow_job, run_with_progress
from sdcloud.ui.labels import applied_text, job_kind, job_state, option_label, settings_note
from sdcloud.ui.progress import bar_text, busy_html, progress_html


def _job(**kw: Any) -> SimpleNamespace:
    base = {"id": "j", "kind": "ckpt-merge", "state": "queued", "progress": 0.0, "step": 0, "steps": 0,
            "eta_seconds": None, "position": None, "error": None, "result": None}
    return SimpleNamespace(**{**base, **kw})


def _snake(text: str) -> bool:
    return "_" in text and text == text.lower()


def test_choices_show_words_and_send_the_api_names() -> None:
    from sdcloud.ui.merge_tab import METHODS, VAE_CHOICES
    from sdcloud.ui.train_tab import SCHEDULERS

    for choices in (METHODS, VAE_CHOICES, SCHEDULERS):
        assert all(not _snake(label) and len(label) > 1 for label, _ in choices), choices
    assert ("Weighted sum", "weighted_sum") in METHODS and ("Bake in A's VAE", "a") in VAE_CHOICES
    assert ("Cosine with restarts", "cosine_with_restarts") in SCHEDULERS


def test_built_ui_shows_no_snake_case_label_or_choice(tmp_path) -> None:
    """Every label and every choice name of the whole page (values may stay the API's)."""
    from sdcloud.api.services import Services
    from sdcloud.runtime import Runtime
    from sdcloud.settings import Settings
    from sdcloud.ui.app import build_ui
    from sdcloud.ui.i18n import DATA_CHOICES_CLASS, english

    services = Services(Runtime(Settings.load({"data_dir": tmp_path, "model": "demo"}, env={})))
    blocks = build_ui(services)
    shown = []
    for block in blocks.blocks.values():
        label = english(getattr(block, "label", None))
        if isinstance(label, str):
            shown.append(label)
        if isinstance(block, gr.Dropdown | gr.Radio) and DATA_CHOICES_CLASS not in (block.elem_classes or []):
            shown += [name for name, _ in block.choices or []]
    assert shown and [t for t in shown if _snake(t)] == []


def test_job_kinds_states_and_options_in_words() -> None:
    assert job_kind("ckpt-merge") == "Merge" and job_kind("train-lora") == "Train LoRA"
    assert job_kind("txt2img") == "txt2img"
    assert [job_state(s) for s in ("queued", "running", "done", "failed", "cancelled")] == [
        "Queued", "Running", "Done", "Failed", "Cancelled"]
    assert option_label("CLIP_stop_at_last_layers") == "Clip skip"
    assert applied_text({"CLIP_stop_at_last_layers": 2}) == "Applied: Clip skip 2"
    assert applied_text({"return_grid": False, "sd_vae": "None"}) == (
        "Applied: SD VAE None, Show grid in results (batches) off")
    assert applied_text({}) == "Nothing changed."
    note = settings_note({"Steps": "20", "Clip skip": "2"})
    assert note == "Settings in the image, not sent: Clip skip 2 (change them under Settings)"
    assert settings_note({"Steps": "20"}) == ""


def test_one_bar_for_jobs_of_every_kind() -> None:
    running = progress_html(_job(state="running", progress=0.4, eta_seconds=12), label="Merging", steps=False)
    assert bar_text(running) == "Merging: 40% · ETA 12s" and 'class="sd-progress sd-running"' in running
    train = progress_html(_job(state="running", progress=0.5, step=2, steps=4), label="Training",
                          detail="loss 0.1234")
    assert bar_text(train) == "Training: Step 2/4 · 50% · loss 0.1234"
    assert bar_text(progress_html(_job(position=3))) == "Queued (#3 in line)"
    assert bar_text(progress_html(_job(state="done"), done="Done: x.safetensors")) == "Done: x.safetensors"
    busy = busy_html("Loading demo-xl", 65)
    assert bar_text(busy) == "Loading demo-xl · 1:05" and "sd-busy" in busy


def test_follow_job_polls_until_the_job_ends() -> None:
    jobs = {"a": _job(state="running", progress=0.25), "b": _job(state="done", result={"output": "m"})}

    def job(job_id: str) -> Any:
        if job_id not in jobs:
            raise BadRequest(f"job {job_id} not found")
        return jobs[job_id]

    services = SimpleNamespace(job=job)
    bar, _, active = follow_job(services, "a", label="Merging", steps=False)
    assert active and bar_text(bar) == "Merging: 25%"
    bar, _, active = follow_job(services, "b", done=lambda j: f"Done: {j.result['output']}")
    assert not active and bar_text(bar) == "Done: m"
    bar, _, active = follow_job(services, "gone")
    assert not active and bar_text(bar) == "Failed: job gone not found"
    assert follow_job(services, None) == ("", None, False)


def test_run_with_progress_moves_then_ends_full_or_red() -> None:
    steps = list(run_with_progress(lambda: time.sleep(0.3) or 7, "Loading x", lambda v: f"Loaded {v}",
                                   poll_s=0.05))
    assert all("sd-busy" in s.bar for s in steps[:-1]) and len(steps) >= 3
    assert steps[-1].done and steps[-1].value == 7 and bar_text(steps[-1].bar) == "Loaded 7"

    def fail() -> None:
        raise BadRequest("model 'nope' not found")

    seen = []
    with pytest.raises(gr.Error, match="model 'nope' not found"):
        for step in run_with_progress(fail, "Loading nope", poll_s=0.01):
            seen.append(step.bar)
    assert bar_text(seen[-1]) == "Failed: model 'nope' not found" and "sd-failed" in seen[-1]


def test_training_bar_in_words() -> None:
    from sdcloud.ui.train_tab import training_bar

    st = {"state": "running", "progress": 0.5, "step": 2, "steps": 4, "eta_seconds": 3, "phase": "training",
          "losses": [[1, 0.5], [2, 0.25]], "it_s": 1.5}
    assert bar_text(training_bar(st)) == "Training: Step 2/4 · 50% · loss 0.2500 · 1.50 it/s · ETA 3s"
    st.update(phase="loading", step=0, progress=0.0, losses=[], it_s=None, eta_seconds=None)
    assert bar_text(training_bar(st)) == "Training (loading the model): Step 0/4 · 0%"
    done = {"state": "done", "result": {"lora": "cat.safetensors", "name": "cat"}}
    assert bar_text(training_bar(done)) == "Done: cat.safetensors is in models/Lora — use it as <lora:cat:0.8>"
    stopped = training_bar({"state": "cancelled", "step": 3, "steps": 10, "progress": 0.3})
    assert bar_text(stopped).startswith("Stopped at step 3/10: the state is saved; tick Resume")


def test_status_line_is_read_again_at_each_page_load(tmp_path) -> None:
    """The session line is filled by the page's load event (and every 10 s), not frozen at the
    text of when the server built the page."""
    from sdcloud.api.services import Services
    from sdcloud.runtime import Runtime
    from sdcloud.settings import Settings
    from sdcloud.ui.app import build_ui

    services = Services(Runtime(Settings.load({"data_dir": tmp_path, "model": "demo"}, env={})))
    blocks = build_ui(services)
    line = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "session_status")
    deps = [d for d in blocks.fns.values() if any(o._id == line._id for o in d.outputs)]
    on_load = [d for d in deps if any(t[1] == "load" for t in d.targets)]
    assert on_load, "no load event fills #session_status"
    real = services.session.snapshot

    def later() -> dict[str, Any]:
        return {**real(), "elapsed_s": 2 * 3600 + 5 * 60}

    services.session.snapshot = later  # type: ignore[method-assign]
    assert on_load[0].fn().startswith("Session 2:05")
