"""The Script dropdown under the generation parameters, as in A1111: None, X/Y/Z plot,
Prompt matrix, Prompts from file or textbox and (img2img) SD upscale, each with its controls.
What it sends is the API's ``script_name`` + positional ``script_args``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdcloud.scripts import for_tab
from sdcloud.scripts.xyz_grid import axes_for
from sdcloud.ui.i18n import DATA_CHOICES_CLASS


@dataclass
class ScriptControls:
    dropdown: gr.Dropdown
    groups: dict[str, list[gr.components.Component]] = field(default_factory=dict)  # title -> args

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.dropdown, *[c for comps in self.groups.values() for c in comps]]

    def request_fields(self, values: list[Any]) -> dict[str, Any]:
        """``script_name``/``script_args`` from the values of ``inputs`` (in that order)."""
        title, rest = values[0], list(values[1:])
        out: dict[str, Any] = {}
        for name, comps in self.groups.items():
            mine, rest = rest[:len(comps)], rest[len(comps):]
            if name == title:
                out = {"script_name": name, "script_args": _args(name, mine)}
        return out


def _args(title: str, values: list[Any]) -> list[Any]:
    if title == "X/Y/Z plot":
        xt, xv, yt, yv, zt, zv, legend, lone, subgrids, keep_random, margin = values
        return [xt, xv or "", [], yt, yv or "", [], zt, zv or "", [], legend, lone, subgrids, keep_random,
                False, False, False, int(margin), True]
    if title == "SD upscale":
        return [None, *values]
    return list(values)


def script_controls(kind: str, upscalers: list[str]) -> ScriptControls:
    is_img2img = kind == "img2img"
    titles = [s.title for s in for_tab(is_img2img)]
    dropdown = gr.Dropdown(["None", *titles], value="None", label="Script", elem_id=f"{kind}_script")
    axes = list(dict.fromkeys(a.label for a in axes_for(is_img2img) if a.apply is not None))
    controls = ScriptControls(dropdown)
    boxes = {}
    with gr.Group(visible=False, elem_id=f"{kind}_script_xyz") as boxes["X/Y/Z plot"]:
        rows = []
        for name, default in (("X", "Seed"), ("Y", "Nothing"), ("Z", "Nothing")):
            with gr.Row():
                rows.append(gr.Dropdown(axes, value=default, label=f"{name} type", elem_id=f"{kind}_xyz_{name}_type"))
                rows.append(gr.Textbox(label=f"{name} values", placeholder="1, 2, 3 or 1-10 (+2) or 1-10 [5]",
                                       elem_id=f"{kind}_xyz_{name}_values"))
        with gr.Row():
            flags = [gr.Checkbox(True, label="Draw legend"), gr.Checkbox(False, label="Include Sub Images"),
                     gr.Checkbox(False, label="Include Sub Grids"), gr.Checkbox(False, label="Keep -1 for seeds")]
        margin = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)")
        controls.groups["X/Y/Z plot"] = [*rows, *flags, margin]
    with gr.Group(visible=False, elem_id=f"{kind}_script_matrix") as boxes["Prompt matrix"]:
        gr.Markdown("Split the prompt with `|`: every combination of the parts after the first is made.")
        with gr.Row():
            pm = [gr.Checkbox(False, label="Set at prompt start"), gr.Checkbox(False, label="Random seeds"),
                  gr.Radio(["positive", "negative"], value="positive", label="Prompt type"),
                  gr.Radio(["comma", "space"], value="comma", label="Joining char")]
        controls.groups["Prompt matrix"] = [*pm, gr.Slider(0, 500, value=0, step=2, label="Grid margins")]
    with gr.Group(visible=False, elem_id=f"{kind}_script_file") as boxes["Prompts from file or textbox"]:
        with gr.Row():
            pf = [gr.Checkbox(False, label="Iterate seed every line"),
                  gr.Checkbox(False, label="Use same random seed for all lines"),
                  gr.Radio(["start", "end"], value="start", label="Insert prompts at the")]
        text = gr.Textbox(label="List of prompt inputs", lines=4, elem_id=f"{kind}_prompts_txt",
                          placeholder='one prompt per line, or --prompt "a cat" --steps 20 --seed 5')
        upload = gr.File(label="Upload prompt inputs", type="binary", file_types=[".txt"])
        upload.upload(lambda data: (data or b"").decode("utf-8", errors="ignore"), inputs=upload, outputs=text)
        controls.groups["Prompts from file or textbox"] = [*pf, text]
    if is_img2img:
        with gr.Group(visible=False, elem_id=f"{kind}_script_sd_upscale") as boxes["SD upscale"]:
            gr.Markdown("Upscales the image, then redraws it tile by tile; the width and height set the tile size.")
            controls.groups["SD upscale"] = [
                gr.Slider(0, 256, value=64, step=16, label="Tile overlap"),
                gr.Radio(upscalers, value=upscalers[1] if len(upscalers) > 1 else upscalers[0], label="Upscaler",
                         elem_classes=[DATA_CHOICES_CLASS]),
                gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Scale Factor"),
            ]
    names = list(boxes)
    dropdown.change(lambda t: [gr.Group(visible=t == n) for n in names], inputs=dropdown,
                    outputs=[boxes[n] for n in names], show_progress="hidden")
    return controls
