"""The Extras tab: A1111's "Single image" postprocessing (upscale by / to, upscaler 2 with
visibility, GFPGAN / CodeFormer), through the same ``ExtrasService`` as the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.follow import run_with_progress
from sdcloud.ui.i18n import DATA_CHOICES_CLASS


def run_extras(services: Any, path: str | None, mode: str, by: float, width: int, height: int, crop: bool,
               up1: str, up2: str, vis2: float, gfpgan: float, codeformer: float, cf_weight: float
               ) -> tuple[Any, str]:
    """One image through postprocessing; (result, info text)."""
    from PIL import Image

    from sdcloud.api.models import ExtrasSingleRequest

    if not path:
        raise gr.Error("Drop an image first.")
    req = ExtrasSingleRequest(resize_mode=0 if mode == "Scale by" else 1, upscaling_resize=by,
                              upscaling_resize_w=int(width), upscaling_resize_h=int(height), upscaling_crop=crop,
                              upscaler_1=up1 or "None", upscaler_2=up2 or "None", extras_upscaler_2_visibility=vis2,
                              gfpgan_visibility=gfpgan, codeformer_visibility=codeformer, codeformer_weight=cf_weight)
    try:
        with Image.open(path) as src:
            src.load()
            out, saved, info = services.extras.run_and_save(src, req)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    return out, f"{info}\nSaved: {saved.name}" if info else f"Saved: {saved.name}"


def extras_tab(services: Any) -> dict[str, Any]:
    names = services.extras.upscalers.names()
    restorers = [r["name"] for r in services.extras.face_restorer_list()]
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            image = gr.Image(type="filepath", label="Source", height=320, sources=["upload", "clipboard"],
                             elem_id="extras_image")
            mode = gr.Radio(["Scale by", "Scale to"], value="Scale by", label="Resize", elem_id="extras_resize_mode")
            by = gr.Slider(1.0, 8.0, value=4.0, step=0.05, label="Resize", elem_id="extras_upscaling_resize")
            with gr.Row():
                width = gr.Number(512, label="Width", precision=0, elem_id="extras_upscaling_resize_w")
                height = gr.Number(512, label="Height", precision=0, elem_id="extras_upscaling_resize_h")
                crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
            with gr.Row():
                up1 = gr.Dropdown(names, value=names[3] if len(names) > 3 else "Lanczos", label="Upscaler 1",
                                  elem_id="extras_upscaler_1", elem_classes=[DATA_CHOICES_CLASS])
                up2 = gr.Dropdown(names, value="None", label="Upscaler 2", elem_id="extras_upscaler_2",
                                  elem_classes=[DATA_CHOICES_CLASS])
                vis2 = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                 elem_id="extras_upscaler_2_visibility")
            with gr.Accordion("Face restoration" + ("" if restorers else " (no GFPGAN/CodeFormer file present)"),
                              open=False):
                gfpgan = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility",
                                   elem_id="extras_gfpgan_visibility")
                codeformer = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility",
                                       elem_id="extras_codeformer_visibility")
                cf_weight = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer weight (0 = max effect)",
                                      elem_id="extras_codeformer_weight")
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(min_width=300):
            progress = gr.HTML("", elem_id="extras_progress")
            result = gr.Image(type="pil", label="Result", format="png", interactive=False, elem_id="extras_result")
            info = gr.Textbox(label="Info", lines=2, interactive=False, elem_id="extras_info")
    def generate(*values: Any) -> Iterator[tuple[Any, Any, str]]:
        if not values[0]:
            raise gr.Error("Drop an image first.")
        label = f"Upscaling with {values[6] or 'None'}" if values[6] not in (None, "", "None") else "Processing"
        for step in run_with_progress(lambda: run_extras(services, *values), label, "Done"):
            if step.done and step.value is not None:
                out, text = step.value
                yield out, text, step.bar
            else:
                yield gr.skip(), gr.skip(), step.bar

    run.click(generate, inputs=[image, mode, by, width, height, crop, up1, up2, vis2, gfpgan, codeformer, cf_weight],
              outputs=[result, info, progress], show_progress="hidden")
    return {"image": image, "upscaler_1": up1, "upscaler_2": up2}
