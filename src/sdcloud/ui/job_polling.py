"""Running a generation from a tab: submit to the job queue, stream progress and preview,
then fill the gallery. The same service calls the HTTP API makes; never the engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.image_files import decode_base64
from sdcloud.ui.controls import GenerationPanel
from sdcloud.ui.params import infotext_of, insert_lora, seed_of
from sdcloud.ui.progress import progress_html

TERMINAL_STATES = ("done", "failed", "cancelled")
POLL_SECONDS = 0.25
BATCH_PREFIX = "batch:"  # panel.job_id of an img2img Batch

RequestBuilder = Callable[[dict[str, Any], list[Any]], dict[str, Any]]


def result_view(services: Any, job: Any) -> tuple[list[str], dict[str, Any]]:
    """(image paths for the gallery, A1111 info dict) from a finished job."""
    if not job.result:
        return [], {}
    try:
        paths = [str(p) for p in services.runtime.image_files(job)]
    except SdcloudError as exc:  # an image was deleted meanwhile: show the rest of the answer
        gr.Warning(str(exc))
        paths = []
    return paths, dict(job.result.get("info") or {})


def run_generation(services: Any, panel: GenerationPanel, build: RequestBuilder, values: tuple[Any, ...]
                   ) -> Iterator[dict[Any, Any]]:
    """Generator behind the Generate button: one yield per progress update."""
    form = dict(zip(panel.keys, values[: len(panel.keys)], strict=True))
    try:
        request = build(form, list(values[len(panel.keys):]))
        job = services.submit(panel.kind, request)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    yield {panel.job_id: job.id, panel.progress: progress_html(job),
           panel.preview: gr.Image(value=None, visible=True)}
    last_preview = None
    while job.state not in TERMINAL_STATES:
        time.sleep(POLL_SECONDS)
        job = services.job(job.id)
        update: dict[Any, Any] = {panel.progress: progress_html(job)}
        preview = getattr(job, "preview", None)
        if preview is not None and preview != last_preview:
            last_preview = preview
            update[panel.preview] = decode_base64(preview, "preview")  # base64 PNG (JPEG from a fleet worker)
        yield update
    paths, info = result_view(services, job)
    done: dict[Any, Any] = {panel.job_id: None, panel.progress: progress_html(job),
                            panel.preview: gr.Image(value=None, visible=False)}
    if paths:
        done.update({panel.gallery: paths, panel.result: {"paths": paths, "info": info},
                     panel.selected: 0, panel.infotext: infotext_of(info, 0)})
    if job.state == "failed":
        gr.Warning(job.error or "generation failed")
    for comment in str(info.get("comments") or "").splitlines():  # e.g. "Networks not found: x"
        gr.Warning(comment)
    yield done


def wire_panel(services: Any, panel: GenerationPanel, build: RequestBuilder,
               extra_inputs: list[gr.components.Component] | None = None,
               run: Callable[..., Iterator[dict[Any, Any]]] | None = None) -> None:
    """Connect Generate, Interrupt, seed buttons, LoRA picker and gallery selection.

    ``run`` replaces the Generate handler (img2img's Batch); it gets the same values and may
    call :func:`run_generation` itself."""
    outputs = [panel.job_id, panel.progress, panel.preview, panel.gallery, panel.result, panel.selected,
               panel.infotext]

    def generate(*values: Any) -> Iterator[dict[Any, Any]]:
        yield from run_generation(services, panel, build, values)

    # Jobs wait in sdcloud's own queue (visible in the Queue tab), not in Gradio's.
    panel.generate.click(run or generate, inputs=panel.inputs + (extra_inputs or []), outputs=outputs,
                         concurrency_limit=None, show_progress="hidden")

    def interrupt(job_id: str | None) -> None:
        if job_id is None:
            gr.Info("Nothing of yours is running.")
            return
        try:
            if job_id.startswith(BATCH_PREFIX):  # an img2img Batch: stop it, not one job
                services.batches.stop(job_id[len(BATCH_PREFIX):])
            else:
                services.cancel(job_id)
        except SdcloudError as exc:
            gr.Warning(str(exc))

    panel.interrupt.click(interrupt, inputs=panel.job_id, outputs=None, concurrency_limit=None)

    panel.seed_random.click(lambda: -1, outputs=panel.fields["seed"], show_progress="hidden")
    panel.seed_reuse.click(lambda result, index: seed_of((result or {}).get("info"), index),
                           inputs=[panel.result, panel.selected], outputs=panel.fields["seed"],
                           show_progress="hidden")

    def add_lora(prompt: str, name: str | None) -> tuple[str, None]:
        return (insert_lora(prompt or "", name) if name else prompt), None

    panel.lora.input(add_lora, inputs=[panel.fields["prompt"], panel.lora],
                     outputs=[panel.fields["prompt"], panel.lora], show_progress="hidden")

    def select(result: dict[str, Any] | None, evt: gr.SelectData) -> tuple[int, str]:
        return evt.index, infotext_of((result or {}).get("info"), evt.index)

    panel.gallery.select(select, inputs=panel.result, outputs=[panel.selected, panel.infotext],
                         show_progress="hidden")
