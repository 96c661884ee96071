"""The Settings tab: the A1111 options (the dict GET /sdapi/v1/options serves) and the
server's input limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import gradio as gr

from sdcloud.errors import BadRequest, SdcloudError


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


def limits_markdown(limits: Any) -> str:
    rows = "\n".join(f"| {name.replace('_', ' ')} | {value} |" for name, value in vars(limits).items())
    return ("**Input limits** (set with `sdcloud serve` flags or the config file)\n\n"
            "| limit | value |\n|---|---|\n" + rows)


def settings_tab(services: Any) -> None:
    gr.Markdown("Options as the A1111 API serves them. Edit values and press **Apply settings**.")
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply")
        reload = gr.Button("↻ Reload", elem_id="settings_reload")
    status = gr.Markdown("", elem_id="settings_status")
    editor = gr.Code(value=lambda: json.dumps(services.options_get(), indent=2, sort_keys=True),
                     language="json", label="Options", lines=20, max_lines=40, elem_id="settings_json")
    gr.Markdown(limits_markdown(services.settings.limits))

    def reload_options() -> tuple[str, str]:
        return json.dumps(services.options_get(), indent=2, sort_keys=True), ""

    def apply_options(text: str) -> tuple[str, str]:
        try:
            changes = changed_options(services.options_get(), text)
            if not changes:
                return text, "Nothing changed."
            services.options_set(changes)
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        fresh, _ = reload_options()
        return fresh, "Applied: " + ", ".join(sorted(changes))

    apply.click(apply_options, inputs=editor, outputs=[editor, status])
    reload.click(reload_options, outputs=[editor, status], show_progress="hidden")
