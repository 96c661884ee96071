"""The txt2img tab."""

from __future__ import annotations

from typing import Any

from sdcloud.ui.choices import Choices
from sdcloud.ui.controls import GenerationPanel, generation_panel
from sdcloud.ui.job_polling import wire_panel
from sdcloud.ui.params import txt2img_request


def txt2img_tab(services: Any, choices: Choices) -> GenerationPanel:
    panel = generation_panel("txt2img", choices)
    wire_panel(services, panel, lambda form, _extra: txt2img_request(form))
    return panel
