"""The ControlNet accordion of the txt2img and img2img tabs: one unit in sd-webui-controlnet's
fields, sent as ``alwayson_scripts.controlnet`` like any API client would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sdcloud.controlnet import models, preprocessors
from sdcloud.controlnet.units import CONTROL_MODES, RESIZE_MODES
from sdcloud.image_files import encode_image
from sdcloud.ui.i18n import DATA_CHOICES_CLASS

# sd-webui-controlnet's slider ranges for the modules' thresholds: name -> ((min, max, step), ...)
THRESHOLD_RANGES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "canny": ((1, 255, 1), (1, 255, 1)),
    "blur_gaussian": ((0.01, 64, 0.01),),
    "tile_resample": ((1, 8, 0.01),),
    "scribble_xdog": ((1, 64, 1),),
    "threshold": ((0, 255, 1),),
}
# the unit fields that PNG Info restores, in the order of ``ControlNetPanel.restorable``
RESTORED = ("enabled", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
            "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b")


@dataclass
class ControlNetPanel:
    inputs: list[Any]
    restorable: list[Any]
    folder: Path

    def add_to(self, request: dict[str, Any], values: list[Any]) -> dict[str, Any]:
        """``request`` with the unit added when it is enabled."""
        enabled, image, module, model, weight, start, end, control, resize, perfect, res, ta, tb = values
        if not enabled:
            return request
        if not model:
            raise gr.Error("Pick a ControlNet model (put files in models/ControlNet).")
        defaults = preprocessors.WEIGHT_FREE.get(preprocessors.canonical(module), (-1, -1))
        unit: dict[str, Any] = {"module": module, "model": model, "weight": weight, "guidance_start": start,
                                "guidance_end": end, "control_mode": control, "resize_mode": resize,
                                "pixel_perfect": perfect, "processor_res": int(res),
                                "threshold_a": ta if defaults[0] != -1 else -1,
                                "threshold_b": tb if defaults[1] != -1 else -1}
        if image is not None:
            unit["image"] = encode_image(image)
        return {**request, "alwayson_scripts": {"controlnet": {"args": [unit]}}}


def threshold_sliders(module: str) -> tuple[Any, Any]:
    """The two threshold sliders for ``module``: shown with its default and range, or hidden."""
    name = preprocessors.canonical(module or "none")
    defaults = preprocessors.WEIGHT_FREE.get(name, (-1, -1))
    ranges = THRESHOLD_RANGES.get(name, ())
    out = []
    for i in range(2):
        if defaults[i] == -1 or i >= len(ranges):
            out.append(gr.Slider(visible=False))  # its value is not sent (add_to)
        else:
            lo, hi, step = ranges[i]
            out.append(gr.Slider(minimum=lo, maximum=hi, step=step, value=defaults[i], visible=True))
    return out[0], out[1]


def restore_values(params: dict[str, Any], folder: Path) -> list[Any]:
    """The panel's restorable values from a PNG's parsed infotext (``ControlNet 0``), as the
    extension restores its first unit; ``gr.skip()`` each when the PNG has no ControlNet. A
    model or preprocessor not present here keeps the current choice, with a warning."""
    from sdcloud.controlnet.units import unit_from_infotext

    text = params.get("ControlNet 0")
    if not text:
        return [gr.skip() for _ in RESTORED]
    unit = {"enabled": True, **unit_from_infotext(str(text))}
    unit["model"] = _hashless(unit.get("model", ""))
    if unit["model"] not in [models.name_of(p) for p in models.scan(folder)]:
        gr.Warning(f"ControlNet model '{unit.pop('model')}' is not in models/ControlNet; kept the current one.")
    modules = preprocessors.module_names(folder / "annotators")
    if preprocessors.canonical(unit.get("module", "")) not in modules:
        gr.Warning(f"ControlNet preprocessor '{unit.pop('module', '')}' is not available here; kept the current one.")
    else:
        unit["module"] = preprocessors.canonical(unit["module"])
    if unit.get("control_mode") not in CONTROL_MODES:
        unit.pop("control_mode", None)
    if unit.get("resize_mode") not in RESIZE_MODES:
        unit.pop("resize_mode", None)
    return [unit.get(k, gr.skip()) for k in RESTORED]


def _hashless(title: str) -> str:
    import re

    return re.sub(r"\s*\[[0-9a-fA-F]{6,12}\]$", "", title)


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
        with gr.Row():
            res = gr.Slider(64, 2048, value=512, step=1, label="Preprocessor Resolution",
                            elem_id=f"{tab}_controlnet_processor_res")
            ta = gr.Slider(1, 255, value=100, step=1, label="Threshold A", elem_id=f"{tab}_controlnet_threshold_a")
            tb = gr.Slider(1, 255, value=200, step=1, label="Threshold B", elem_id=f"{tab}_controlnet_threshold_b")
        control = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                           elem_id=f"{tab}_controlnet_control_mode")
        resize = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize Mode",
                          elem_id=f"{tab}_controlnet_resize_mode")
    module.input(threshold_sliders, inputs=module, outputs=[ta, tb], show_progress="hidden")
    refresh.click(lambda: (gr.Dropdown(choices=[models.name_of(p) for p in models.scan(folder)]),
                           gr.Dropdown(choices=preprocessors.module_names(folder / "annotators"))),
                  outputs=[model, module], show_progress="hidden")
    return ControlNetPanel([enabled, image, module, model, weight, start, end, control, resize, perfect, res, ta, tb],
                           [enabled, module, model, weight, start, end, control, resize, perfect, res, ta, tb],
                           folder)
