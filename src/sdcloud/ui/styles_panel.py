"""Styles under the prompts, as in A1111: pick styles from ``styles.csv`` (applied when the
image is made, and listed in its info), **Apply** them into the prompt boxes, or **Save** the
current prompts as a style."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.i18n import DATA_CHOICES_CLASS


@dataclass
class StyleControls:
    dropdown: gr.Dropdown
    apply: gr.Button
    name: gr.Textbox
    save: gr.Button


def style_controls(kind: str, names: list[str]) -> StyleControls:
    with gr.Row(elem_classes="sd-styles-row"):
        dropdown = gr.Dropdown(names, value=[], multiselect=True, label="Styles", scale=4,
                               elem_id=f"{kind}_styles", elem_classes=[DATA_CHOICES_CLASS])
        apply = gr.Button("Apply", size="sm", scale=0, min_width=72, elem_id=f"{kind}_styles_apply")
    with gr.Accordion("Save prompts as a style", open=False, elem_id=f"{kind}_styles_save_box"):
        with gr.Row():
            name = gr.Textbox(label="Style name", scale=4, elem_id=f"{kind}_style_name")
            save = gr.Button("Save style", size="sm", scale=0, min_width=96, elem_id=f"{kind}_style_save")
    return StyleControls(dropdown, apply, name, save)


def wire_styles(services: Any, controls: StyleControls, prompt: gr.Textbox, negative: gr.Textbox) -> None:
    from sdcloud.api.styles import apply_styles

    def apply(names: list[str] | None, text: str, neg: str) -> tuple[str, str, list[str]]:
        new_text, new_neg = apply_styles(services.prompt_styles(), list(names or []), text or "", neg or "")
        return new_text, new_neg, []

    controls.apply.click(apply, inputs=[controls.dropdown, prompt, negative],
                         outputs=[prompt, negative, controls.dropdown], show_progress="hidden")

    def save(name: str, text: str, neg: str, selected: list[str] | None) -> tuple[Any, str]:
        try:
            styles = services.save_style(name, text or "", neg or "")
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Saved style '{name.strip()}' to styles.csv")
        return gr.Dropdown(choices=[s["name"] for s in styles], value=list(selected or [])), ""

    controls.save.click(save, inputs=[controls.name, prompt, negative, controls.dropdown],
                        outputs=[controls.dropdown, controls.name], show_progress="hidden")
