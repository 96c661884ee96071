"""The Settings tab: the A1111 options (the dict GET /sdapi/v1/options serves) and the
server's input limits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdcloud.errors import BadRequest, SdcloudError
from sdcloud.ui.follow import run_with_progress
from sdcloud.ui.i18n import DATA_CHOICES_CLASS, DATA_CLASS
from sdcloud.ui.labels import OPTION_LABELS as L
from sdcloud.ui.labels import applied_text
from sdcloud.ui.progress import done_html


def changed_options(current: Mapping[str, Any], edited_json: str) -> dict[str, Any]:
    """The keys whose value the user changed in the JSON editor.

    Raises ``BadRequest`` on text that is not a JSON object, so nothing half-parsed is applied.
    """
    try:
        edited = json.loads(edited_json or "{}")
    except json.JSONDecodeError as exc:
        raise BadRequest(f"settings are not valid JSON: {exc}") from None
    if not isinstance(edited, dict):
        raise BadRequest("settings must be a JSON object of option: value")
    return {k: v for k, v in edited.items() if k not in current or current[k] != v}


def typed_changes(current: Mapping[str, Any], edited: Mapping[str, Any]) -> dict[str, Any]:
    """Form values cast to the type each option has now (sliders answer floats), keeping
    only those that differ."""
    out: dict[str, Any] = {}
    for key, value in edited.items():
        old = current.get(key)
        if isinstance(old, bool):
            value = bool(value)
        elif isinstance(old, int) and value is not None:
            value = int(value)
        if value != old:
            out[key] = value
    return out


# The options with a form control, in A1111's words; anything else is in the JSON editor.
_CONTROLS: dict[str, Callable[[Any], gr.components.Component]] = {
    "CLIP_stop_at_last_layers": lambda v: gr.Slider(1, 12, value=v, step=1, label=L["CLIP_stop_at_last_layers"]),
    "samples_format": lambda v: gr.Dropdown(["png", "jpg", "jpeg", "webp"], value=v,
                                            label=L["samples_format"], elem_classes=[DATA_CHOICES_CLASS]),
    "jpeg_quality": lambda v: gr.Slider(1, 100, value=v, step=1, label=L["jpeg_quality"]),
    "return_grid": lambda v: gr.Checkbox(value=v, label=L["return_grid"]),
    "live_previews_enable": lambda v: gr.Checkbox(value=v, label=L["live_previews_enable"]),
    "show_progress_every_n_steps": lambda v: gr.Number(
        value=v, precision=0, minimum=-1, label=L["show_progress_every_n_steps"],
        info="-1 = only when the image is done"),
}


LIMITS_HEADING = "**Input limits** (set with `SDCLOUD_MAX_*` environment variables or the config file)"


def limits_markdown(limits: Any) -> str:
    """The limits as a table (setting names and numbers: data, not translated)."""
    rows = "\n".join(f"| {name.replace('_', ' ')} | {value} |" for name, value in vars(limits).items())
    return "| limit | value |\n|---|---|\n" + rows


def _options_json(services: Any) -> str:
    return json.dumps(services.options_get(), indent=2, sort_keys=True)


@dataclass
class SettingsTab:
    """``refresh()`` gives fresh values for ``outputs`` (run on each page load)."""

    outputs: list[gr.components.Component]
    refresh: Callable[[], list[Any]]


def settings_tab(services: Any) -> SettingsTab:
    present = services.options_get()
    keys = [k for k in _CONTROLS if k in present]
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply")
        reload = gr.Button("↻ Reload", elem_id="settings_reload")
    status = gr.HTML("", elem_id="settings_status")
    controls = []
    for key in keys:
        control = _CONTROLS[key](present[key])
        control.elem_id = f"setting_{key}"  # set before the config is built, like the constructor's
        controls.append(control)
    with gr.Accordion("All options (JSON, as GET /sdapi/v1/options serves them)", open=False):
        editor = gr.Code(value=_options_json(services), language="json", label="Options",
                         lines=12, max_lines=40, elem_id="settings_json")
        apply_json = gr.Button("Apply JSON", elem_id="settings_apply_json")
    gr.Markdown(LIMITS_HEADING)
    gr.Markdown(limits_markdown(services.settings.limits), elem_classes=[DATA_CLASS])

    def current_values() -> list[Any]:
        options = services.options_get()
        return [options.get(k) for k in keys] + [_options_json(services)]

    skip = [gr.skip()] * (len(controls) + 1)

    def save(changes: dict[str, Any]) -> Iterator[list[Any]]:
        if not changes:
            yield [*current_values(), done_html(applied_text(changes))]
            return
        # a new checkpoint or VAE loads now: the bar moves until it is in
        for step in run_with_progress(lambda: services.options_set(changes), "Applying settings",
                                      applied_text(changes)):
            yield [*(current_values() if step.done else skip), step.bar]

    def apply_form(*values: Any) -> Iterator[list[Any]]:
        yield from save(typed_changes(services.options_get(), dict(zip(keys, values, strict=True))))

    def apply_text(text: str) -> Iterator[list[Any]]:
        try:
            changes = changed_options(services.options_get(), text)
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        yield from save(changes)

    outputs = [*controls, editor, status]
    apply.click(apply_form, inputs=controls, outputs=outputs, show_progress="hidden")
    apply_json.click(apply_text, inputs=editor, outputs=outputs, show_progress="hidden")
    reload.click(lambda: [*current_values(), ""], outputs=outputs, show_progress="hidden")
    return SettingsTab(outputs=[*controls, editor], refresh=current_values)
