"""The ControlNet accordion of the txt2img and img2img tabs: one unit in sd-webui-controlnet's
fields, sent as ``alwayson_scripts.controlnet`` like any API client would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdcloud.controlnet import models, preprocessors
from sdcloud.controlnet.units import CONTROL_MODES, RESIZE_MODES
from sdcloud.image_files import encode_image
from sdcloud.ui.i18n import DATA_CHOICES_CLASS


@dataclass
class ControlNetPanel:
    inputs: list[Any]

    def add_to(self, request: dict[str, Any], values: list[Any]) -> dict[str, Any]:
        """``request`` with the unit added when it is enabled."""
        enabled, image, module, model, weight, start, end, control, resize, perfect = values
        if not enabled:
            return request
        if not model:
            raise gr.Error("Pick a ControlNet model (put files in models/ControlNet).")
        unit: dict[str, Any] = {"module": module, "model": model, "weight": weight, "guidance_start": start,
                                "guidance_end": end, "control_mode": control, "resize_mode": resize,
                                "pixel_perfect": perfect}
        if image is not None:
            unit["image"] = encode_image(image)
        return {**request, "alwayson_scripts": {"controlnet": {"args": [unit]}}}


def controlnet_panel(services: Any, tab: str) -> ControlNetPanel:
    folder = services.settings.models_root / "ControlNet"
    model_names = [models.name_of(p) for p in models.scan(folder)]
    with gr.Accordion("ControlNet", open=False, elem_id=f"{tab}_controlnet"):
        with gr.Row():
            enabled = gr.Checkbox(False, label="Enable", elem_id=f"{tab}_controlnet_enable")
            perfect = gr.Checkbox(False, label="Pixel Perfect", elem_id=f"{tab}_controlnet_pixel_perfect")
        image = gr.Image(type="pil", image_mode="RGB", label="Control image" + (" (empty: the img2img image)"
                         if tab == "img2img" else ""), height=240, sources=["upload", "clipboard"],
                         elem_id=f"{tab}_controlnet_image")
        with gr.Row():
            module = gr.Dropdown(preprocessors.module_names(folder / "annotators"), value="canny",
                                 label="Preprocessor", elem_id=f"{tab}_controlnet_module",
                                 elem_classes=[DATA_CHOICES_CLASS])
            model = gr.Dropdown(model_names, value=model_names[0] if model_names else None, label="Model",
                                elem_id=f"{tab}_controlnet_model", elem_classes=[DATA_CHOICES_CLASS])
            refresh = gr.Button("↻", scale=0, min_width=48, elem_id=f"{tab}_controlnet_refresh")
        with gr.Row():
            weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                               elem_id=f"{tab}_controlnet_weight")
            start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                              elem_id=f"{tab}_controlnet_guidance_start")
            end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                            elem_id=f"{tab}_controlnet_guidance_end")
        control = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                           elem_id=f"{tab}_controlnet_control_mode")
        resize = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize Mode",
                          elem_id=f"{tab}_controlnet_resize_mode")
    refresh.click(lambda: gr.Dropdown(choices=[models.name_of(p) for p in models.scan(folder)]), outputs=model,
                  show_progress="hidden")
    return ControlNetPanel([enabled, image, module, model, weight, start, end, control, resize, perfect])
