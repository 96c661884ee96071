"""The PNG Info tab: drop an image, read its generation parameters."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError


@dataclass
class PngInfoTab:
    image: gr.Image
    text: gr.Textbox
    parameters: gr.JSON
    params_state: gr.State
    send_to_txt2img: gr.Button


def read_png_info(services: Any, path: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(infotext, parsed parameters) of the uploaded file, via the service the API's png-info uses."""
    if not path:
        return "", {}, {}
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    try:
        answer = services.png_info(data)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    info = answer.get("info") or ""
    params = dict(answer.get("parameters") or {}) if info else {}
    if not info:
        info = "This image has no generation parameters."
    return info, params, params


def png_info_tab(services: Any) -> PngInfoTab:
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            # filepath + no mode conversion: the file arrives byte for byte, text chunks intact
            image = gr.Image(type="filepath", image_mode=None, label="Source", height=360,
                             sources=["upload", "clipboard"], elem_id="pnginfo_image")
        with gr.Column(min_width=300):
            text = gr.Textbox(label="Parameters", lines=6, max_lines=20, interactive=False,
                              buttons=["copy"], elem_id="pnginfo_text")
            send = gr.Button("Send to txt2img", variant="primary", elem_id="pnginfo_send_to_txt2img")
            with gr.Accordion("Parsed fields", open=False):
                parameters = gr.JSON(label="Fields", elem_id="pnginfo_fields")
    params_state = gr.State({})
    image.change(lambda path: read_png_info(services, path), inputs=image,
                 outputs=[text, parameters, params_state], show_progress="hidden")
    return PngInfoTab(image, text, parameters, params_state, send)
