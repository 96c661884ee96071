"""The txt2img tab."""

from __future__ import annotations

from typing import Any

from sdcloud.ui.choices import Choices
from sdcloud.ui.controlnet_panel import controlnet_panel
from sdcloud.ui.controls import GenerationPanel, generation_panel
from sdcloud.ui.gen_extras import wire_extras
from sdcloud.ui.job_polling import wire_panel
from sdcloud.ui.params import txt2img_request
from sdcloud.ui.styles_panel import wire_styles


def txt2img_tab(services: Any, choices: Choices) -> GenerationPanel:
    panel = generation_panel("txt2img", choices)
    script, styles = panel.extra["script"], panel.extra["styles"]
    cn = controlnet_panel(services, "txt2img")
    n_script = len(script.inputs)

    def build(form: dict[str, Any], extra: list[Any]) -> dict[str, Any]:
        request = {**txt2img_request(form), "styles": list(extra[0] or []),
                   **script.request_fields(extra[1:1 + n_script])}
        return cn.add_to(request, extra[1 + n_script:])

    wire_panel(services, panel, build, [styles.dropdown, *script.inputs, *cn.inputs])
    wire_styles(services, styles, panel.fields["prompt"], panel.fields["negative_prompt"])
    wire_extras(services, panel)
    panel.extra["controlnet"] = cn
    return panel
