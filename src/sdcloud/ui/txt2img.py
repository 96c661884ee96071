"""The txt2img tab."""

from __future__ import annotations

from typing import Any

from sdcloud.ui.choices import Choices
from sdcloud.ui.controlnet_panel import controlnet_panel
from sdcloud.ui.controls import GenerationPanel, generation_panel
from sdcloud.ui.job_polling import wire_panel
from sdcloud.ui.params import txt2img_request


def txt2img_tab(services: Any, choices: Choices) -> GenerationPanel:
    panel = generation_panel("txt2img", choices)
    cn = controlnet_panel(services, "txt2img")
    wire_panel(services, panel, lambda form, extra: cn.add_to(txt2img_request(form), extra), cn.inputs)
    return panel
