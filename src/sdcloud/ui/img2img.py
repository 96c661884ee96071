"""The img2img tab, with its img2img and Inpaint sub-tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from sdcloud.image_files import encode_image
from sdcloud.ui.choices import Choices
from sdcloud.ui.controlnet_panel import controlnet_panel
from sdcloud.ui.controls import GenerationPanel, generation_panel
from sdcloud.ui.gen_extras import wire_extras
from sdcloud.ui.inpaint_mask import inpaint_inputs
from sdcloud.ui.job_polling import wire_panel
from sdcloud.ui.params import img2img_request
from sdcloud.ui.styles_panel import wire_styles


def _image_inputs() -> dict[str, Any]:
    with gr.Tabs(selected="img2img") as tabs:
        with gr.Tab("img2img", id="img2img") as plain_tab:
            init = gr.Image(type="pil", image_mode="RGB", label="Image for img2img", height=360,
                            sources=["upload", "clipboard"], elem_id="img2img_image")
        with gr.Tab("Inpaint", id="inpaint") as inpaint_tab:
            editor = gr.ImageEditor(
                type="pil", label="Image for inpainting: paint the area to repaint", height=360,
                sources=("upload", "clipboard"), transforms=(), layers=False,
                brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                elem_id="img2img_inpaint_editor",
            )
            with gr.Accordion("Upload a mask instead (white = repaint)", open=False):
                mask_upload = gr.Image(type="pil", image_mode="L", label="Mask", height=240,
                                       sources=["upload", "clipboard"], elem_id="img2img_mask_upload")
    mode = gr.State("img2img")
    plain_tab.select(lambda: "img2img", outputs=mode, show_progress="hidden")
    inpaint_tab.select(lambda: "inpaint", outputs=mode, show_progress="hidden")
    return {"tabs": tabs, "init": init, "editor": editor, "mask_upload": mask_upload, "mode": mode}


def _build_request(form: dict[str, Any], extra: list[Any]) -> dict[str, Any]:
    mode, init, editor, mask_upload = extra[:4]
    if mode == "inpaint":
        image, mask = inpaint_inputs(editor, mask_upload)
        if image is None:
            raise gr.Error("Upload an image to inpaint first.")
        if mask is None:
            raise gr.Error("Paint over the area to repaint, or upload a mask.")
        return img2img_request(form, encode_image(image), encode_image(mask))
    if not isinstance(init, Image.Image):
        raise gr.Error("Upload an image for img2img first.")
    return img2img_request(form, encode_image(init))


def img2img_tab(services: Any, choices: Choices) -> GenerationPanel:
    panel = generation_panel("img2img", choices, image_inputs=_image_inputs)
    x = panel.extra
    script, styles = x["script"], x["styles"]
    cn = controlnet_panel(services, "img2img")
    with gr.Row():
        interrogate_clip = gr.Button("Interrogate CLIP", elem_id="img2img_interrogate")
        interrogate = gr.Button("Interrogate DeepBooru", elem_id="img2img_deepbooru")
    n_script = len(script.inputs)

    def build(form: dict[str, Any], extra: list[Any]) -> dict[str, Any]:
        request = {**_build_request(form, extra), "styles": list(extra[4] or []),
                   **script.request_fields(extra[5:5 + n_script])}
        return cn.add_to(request, extra[5 + n_script:])

    wire_panel(services, panel, build,
               [x["mode"], x["init"], x["editor"], x["mask_upload"], styles.dropdown, *script.inputs, *cn.inputs])
    wire_styles(services, styles, panel.fields["prompt"], panel.fields["negative_prompt"])
    wire_extras(services, panel)
    interrogate.click(lambda image: interrogate_prompt(services, image), inputs=x["init"],
                      outputs=panel.fields["prompt"])
    interrogate_clip.click(lambda image: interrogate_prompt(services, image, "clip"), inputs=x["init"],
                           outputs=panel.fields["prompt"])
    return panel


def interrogate_prompt(services: Any, image: Any, model: str = "deepdanbooru") -> str:
    """The img2img image's tags (A1111's Interrogate DeepBooru button) or, with ``model``
    ``clip``, its BLIP + CLIP caption (Interrogate CLIP), as the prompt."""
    from sdcloud.errors import SdcloudError

    if image is None:
        raise gr.Error("Upload an image for img2img first.")
    try:
        if model == "clip":
            from sdcloud.api.routes_extras import clip_options

            return services.interrogator.caption(image, "clip", clip_options(services))
        return services.interrogator.caption(image, "deepdanbooru")
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
