"""The Merge tab (queued like generation, through the same ``services.ckpt`` the
``/api/ckpt/merge`` route uses) and the session/storage status line under the model bar."""

from __future__ import annotations

from typing import Any

import gradio as gr
from pydantic import ValidationError

from sdcloud.errors import SdcloudError
from sdcloud.jobs.ckpt import MergeRequest
from sdcloud.ui.follow import follow_job
from sdcloud.ui.i18n import DATA_CHOICES_CLASS, DATA_CLASS
from sdcloud.ui.progress import progress_html

# (label shown, value sent): A1111's words on screen, the API's names in the request
METHODS = [("Weighted sum", "weighted_sum"), ("Add difference", "add_difference"),
           ("Train difference", "train_difference"), ("TIES", "ties"), ("DARE", "dare")]
VAE_CHOICES = [("Bake in A's VAE", "a"), ("Merge the VAEs", "merge"), ("No VAE", "none")]
STATUS_EVERY_S = 10.0
FIELD_LABELS = {"a": "Primary model (A)", "b": "Secondary model (B)", "c": "Tertiary model (C)",
                "method": "Method", "alpha": "Multiplier (alpha)", "dtype": "Save as", "vae": "VAE",
                "output": "Output name", "block_weights": "Block weights"}
"""MergeRequest fields as the tab labels them, for error messages."""


def _checkpoint_names(services: Any) -> list[str]:
    return [m.name for m in services.catalog.checkpoints() if m.path.is_file()]


def merged_text(job: Any) -> str:
    """The finished merge's line: the new checkpoint's file name and short hash."""
    r = job.result or {}
    return f"Done: {r.get('output')} [{r.get('short_hash')}] is in the checkpoint list"


def merge_tab(services: Any) -> None:
    names = _checkpoint_names(services)
    with gr.Row():
        a = gr.Dropdown(names, value=None, label="Primary model (A)", elem_id="merge_a",
                        elem_classes=[DATA_CHOICES_CLASS])
        b = gr.Dropdown(names, value=None, label="Secondary model (B)", elem_id="merge_b",
                        elem_classes=[DATA_CHOICES_CLASS])
        c = gr.Dropdown(names, value=None, label="Tertiary model (C, the common base)", elem_id="merge_c",
                        elem_classes=[DATA_CHOICES_CLASS])
        refresh = gr.Button("↻", scale=0, min_width=48, elem_id="merge_refresh")
    with gr.Row():
        method = gr.Radio(METHODS, value="weighted_sum", label="Method", elem_id="merge_method")
        alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Multiplier (alpha)", elem_id="merge_alpha")
    with gr.Row():
        dtype = gr.Radio([("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32"), ("Keep as is", "keep")],
                         value="fp16", label="Save as", elem_id="merge_dtype", elem_classes=[DATA_CHOICES_CLASS])
        vae = gr.Radio(VAE_CHOICES, value="a", label="VAE", elem_id="merge_vae")
        output = gr.Textbox(label="Output name (in models/Stable-diffusion)", placeholder="my-merge",
                            elem_id="merge_output")
    block_weights = gr.Textbox(label="Block weights (optional: 26 values for SD1/SD2, 20 for SDXL)",
                               elem_id="merge_blocks")
    run = gr.Button("Merge", variant="primary", elem_id="merge_run")
    status = gr.HTML("", elem_id="merge_status")
    job_id = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    def submit(a_: str, b_: str, c_: str | None, method_: str, alpha_: float, dtype_: str, vae_: str,
               output_: str, blocks_: str) -> tuple[str, str, Any]:
        try:
            req = MergeRequest(a=a_ or "", b=b_ or "", c=c_ or None, method=method_, alpha=alpha_,
                               dtype=dtype_, vae=vae_, output=output_ or "", block_weights=blocks_ or None)
            job = services.ckpt.submit(req)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            raise gr.Error(f"{FIELD_LABELS.get(field, field)}: {first['msg']}") from None
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        return job.id, progress_html(job, label="Merging", steps=False), gr.Timer(active=True)

    def watch(current: str | None) -> tuple[str, Any]:
        bar, _, active = follow_job(services, current, label="Merging", steps=False, done=merged_text)
        return bar, gr.Timer(active=active)

    def reload_names() -> tuple[Any, Any, Any]:
        services.refresh()
        fresh = _checkpoint_names(services)
        return gr.Dropdown(choices=fresh), gr.Dropdown(choices=fresh), gr.Dropdown(choices=fresh)

    run.click(submit, inputs=[a, b, c, method, alpha, dtype, vae, output, block_weights],
              outputs=[job_id, status, timer])
    timer.tick(watch, inputs=job_id, outputs=[status, timer], show_progress="hidden")
    refresh.click(reload_names, outputs=[a, b, c], show_progress="hidden")


def status_line(services: Any) -> None:
    """Session time, spend and the next limit; the store and its upload queue; any warning."""
    # a callable value is read again on every page load: the line is fresh from the start,
    # not the text of when the server built the page
    gr.Markdown(lambda: _status_text(services), every=gr.Timer(STATUS_EVERY_S), elem_id="session_status",
                elem_classes=[DATA_CLASS])


def _status_text(services: Any) -> str:
    s = services.session.snapshot()
    h, rest = divmod(int(s["elapsed_s"]), 3600)
    parts = [f"Session {h}:{rest // 60:02d}"]
    if s["spend"] is not None:
        parts.append(f"{s['spend']:.2f} {s['currency']} at {s['price_per_hour']:g}/h")
    if s["limit"]:
        parts.append(f"{s['limit']['description']} in {int(s['limit']['seconds_left'] // 60)} min")
    st = services.persistence.status()
    if st["store"]:
        parts.append(f"store {st['store']}: {st['pending']} pending, {st['uploaded']} uploaded")
    else:
        parts.append("no store: images stay on this machine")
    warnings = [w for w in (s["warning"], st.get("warning"), *st["warnings"]) if w]
    return " · ".join(parts) + "".join(f"\n\n⚠ {w}" for w in warnings)
