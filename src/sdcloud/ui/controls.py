"""The A1111 generation form shared by the txt2img and img2img tabs.

Each control is keyed by the A1111 request field it fills, so the handlers turn the form
into a request with :func:`sdcloud.ui.params.txt2img_request` without a mapping table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from sdcloud.engine.request_rules import HIRES_DENOISE, IMG2IMG_DENOISE
from sdcloud.ui.choices import Choices
from sdcloud.ui.i18n import DATA_CHOICES_CLASS, DATA_CLASS
from sdcloud.ui.params import (
    INPAINT_AREAS,
    MASK_MODES,
    MASKED_CONTENT,
    NO_REFINER,
    RESIZE_MODES,
    SAME_CHECKPOINT,
    SAME_SAMPLER,
    SAME_SCHEDULER,
)


@dataclass
class GenerationPanel:
    """The components of one generation tab (txt2img or img2img)."""

    kind: str
    fields: dict[str, gr.components.Component]
    generate: gr.Button
    interrupt: gr.Button
    lora: gr.Dropdown
    seed_random: gr.Button
    seed_reuse: gr.Button
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    infotext: gr.Textbox
    result: gr.State  # {"images": [paths], "info": A1111 info dict}
    selected: gr.State  # index of the selected gallery image
    job_id: gr.State
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.fields)

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.fields.values())


def generation_panel(kind: str, choices: Choices, image_inputs: Callable[[], dict[str, Any]] | None = None
                     ) -> GenerationPanel:
    """Lay out prompt row, parameters column and results column, A1111-style.

    ``image_inputs`` builds the img2img image area (init image, inpaint editor) at the top of
    the parameters column and returns its components, kept in ``panel.extra``.
    """
    r = choices.ranges
    f: dict[str, gr.components.Component] = {}
    with gr.Row(elem_classes="sd-prompt-row"):
        with gr.Column(scale=6, min_width=280):
            f["prompt"] = gr.Textbox(label="Prompt", lines=3, max_lines=12, elem_id=f"{kind}_prompt",
                                     placeholder="Prompt (press Ctrl+Enter or the Generate button)")
            counter = gr.HTML("0/75", elem_id=f"{kind}_token_counter", elem_classes="sd-token-counter")
            f["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, max_lines=8,
                                              elem_id=f"{kind}_neg_prompt")
            neg_counter = gr.HTML("0/75", elem_id=f"{kind}_negative_token_counter",
                                  elem_classes="sd-token-counter")
            from sdcloud.ui.styles_panel import style_controls

            styles = style_controls(kind, list(getattr(choices, "styles", [])))
            from sdcloud.ui.extra_networks import extra_networks_controls

            networks = extra_networks_controls(kind)
        with gr.Column(scale=1, min_width=160, elem_classes="sd-actions"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{kind}_generate")
            interrupt = gr.Button("Interrupt", variant="stop", elem_id=f"{kind}_interrupt")
            skip = gr.Button("Skip", elem_id=f"{kind}_skip")
            lora = gr.Dropdown(choices=choices.loras, value=None, label="Add LoRA", elem_id=f"{kind}_lora",
                               elem_classes=[DATA_CHOICES_CLASS],
                               info="inserts <lora:name:1> into the prompt")
    extra: dict[str, Any] = {"styles": styles, "skip": skip, "token_counters": (counter, neg_counter),
                             "extra_networks": networks}
    with gr.Row(equal_height=False, elem_classes=["sd-main-row", f"sd-{kind}"]):
        with gr.Column(scale=1, min_width=300):
            if image_inputs is not None:
                extra.update(image_inputs())
                f["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode")
            with gr.Row():
                f["sampler_name"] = gr.Dropdown(choices.samplers, value=_first(choices.samplers, "DPM++ 2M"),
                                                label="Sampling method", elem_id=f"{kind}_sampler",
                                                elem_classes=[DATA_CHOICES_CLASS])
                f["scheduler"] = gr.Dropdown(choices.schedulers,
                                             value=_first(choices.schedulers, "Automatic"),
                                             label="Schedule type", elem_id=f"{kind}_scheduler",
                                             elem_classes=[DATA_CHOICES_CLASS])
            f["steps"] = gr.Slider(1, r.max_steps, value=20, step=1, label="Sampling steps",
                                   elem_id=f"{kind}_steps")
            if kind == "img2img":
                extra.update(_resize_tabs(f, choices))
            else:
                _size_row(f, choices, kind)
            with gr.Row():
                f["n_iter"] = gr.Slider(1, r.max_n_iter, value=1, step=1, label="Batch count",
                                        elem_id=f"{kind}_batch_count")
                f["batch_size"] = gr.Slider(1, r.max_batch_size, value=1, step=1, label="Batch size",
                                           elem_id=f"{kind}_batch_size")
            f["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale",
                                       elem_id=f"{kind}_cfg")
            if kind == "img2img":
                f["denoising_strength"] = gr.Slider(0.0, 1.0, value=IMG2IMG_DENOISE, step=0.01,
                                                    label="Denoising strength", elem_id="img2img_denoising")
            with gr.Row(elem_classes="sd-seed-row"):
                f["seed"] = gr.Number(value=-1, precision=0, label="Seed", scale=4, min_width=140,
                                      elem_id=f"{kind}_seed")
                seed_random = gr.Button("Random", size="md", scale=0, min_width=72,
                                        elem_id=f"{kind}_random_seed")
                seed_reuse = gr.Button("Reuse", size="md", scale=0, min_width=72,
                                       elem_id=f"{kind}_reuse_seed")
            if kind == "txt2img":
                _hires_controls(f, choices)
            else:
                _inpaint_controls(f)
            _refiner_controls(kind, f, choices)
            from sdcloud.ui.scripts_panel import script_controls

            extra["script"] = script_controls(kind, ["None", *[u for u in choices.upscalers
                                                              if not u.startswith("Latent")]])
        with gr.Column(scale=1, min_width=300, elem_classes="sd-results"):
            progress = gr.HTML("", elem_id=f"{kind}_progress", js_on_load=None)
            preview = gr.Image(label="Preview", visible=False, interactive=False, height=320,
                               elem_id=f"{kind}_preview")
            gallery = gr.Gallery(label="Output", columns=2, height="auto", object_fit="contain",
                                 format="png", interactive=False, elem_id=f"{kind}_gallery")
            infotext = gr.Textbox(label="Generation info", lines=4, max_lines=12, interactive=False,
                                  buttons=["copy"], elem_id=f"{kind}_infotext")
            with gr.Row(elem_classes="sd-image-buttons"):
                extra["save"] = gr.Button("Save", size="sm", elem_id=f"save_{kind}")
                extra["save_zip"] = gr.Button("Zip", size="sm", elem_id=f"save_zip_{kind}")
                send_to_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{kind}_send_to_img2img")
                send_to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id=f"{kind}_send_to_inpaint")
            extra["download"] = gr.File(None, file_count="multiple", interactive=False, show_label=False,
                                        visible=False, elem_id=f"download_files_{kind}")
            extra["save_log"] = gr.HTML("", elem_id=f"html_log_{kind}")
    return GenerationPanel(
        kind=kind, fields=f, generate=generate, interrupt=interrupt, lora=lora, seed_random=seed_random,
        seed_reuse=seed_reuse, progress=progress, preview=preview, gallery=gallery, infotext=infotext,
        result=gr.State(None), selected=gr.State(0), job_id=gr.State(None),
        send_to_img2img=send_to_img2img, send_to_inpaint=send_to_inpaint, extra=extra,
    )


def _size_row(f: dict[str, gr.components.Component], choices: Choices, kind: str) -> None:
    r = choices.ranges
    with gr.Row():
        f["width"] = gr.Slider(64, r.max_width, value=512, step=8, label="Width", elem_id=f"{kind}_width")
        f["height"] = gr.Slider(64, r.max_height, value=512, step=8, label="Height", elem_id=f"{kind}_height")


def _resize_tabs(f: dict[str, gr.components.Component], choices: Choices) -> dict[str, Any]:
    """img2img's *Resize to* (width, height, 📐 size from the picture) and *Resize by* (scale,
    with the size it gives) tabs, as A1111 has them."""
    with gr.Tabs(selected="to", overflow_behavior="wrap", elem_id="img2img_resize_tabs"):
        with gr.Tab("Resize to", id="to", elem_id="img2img_tab_resize_to") as to_tab:
            with gr.Row(equal_height=True):
                _size_row(f, choices, "img2img")
                detect = gr.Button("📐", scale=0, min_width=48, elem_id="img2img_detect_size")
        with gr.Tab("Resize by", id="by", elem_id="img2img_tab_resize_by") as by_tab:
            scale = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale")
            preview = gr.HTML("No image selected", elem_id="img2img_scale_resolution_preview",
                              elem_classes=[DATA_CLASS])
    resize_by = gr.State(False)
    to_tab.select(lambda: False, outputs=resize_by, show_progress="hidden")
    by_tab.select(lambda: True, outputs=resize_by, show_progress="hidden")
    return {"scale": scale, "scale_preview": preview, "resize_by": resize_by, "size_from_image": detect}


def _hires_controls(f: dict[str, gr.components.Component], choices: Choices) -> None:
    r = choices.ranges
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr"):
        f["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix", elem_id="txt2img_enable_hr")
        with gr.Row():
            f["hr_upscaler"] = gr.Dropdown(choices.upscalers, value=_first(choices.upscalers, "Latent"),
                                           label="Upscaler", elem_id="txt2img_hr_upscaler",
                                           elem_classes=[DATA_CHOICES_CLASS])
            f["hr_second_pass_steps"] = gr.Slider(0, r.max_steps, value=0, step=1, label="Hires steps",
                                                  info="0 = same as sampling steps", elem_id="txt2img_hr_steps")
        with gr.Row():
            f["denoising_strength"] = gr.Slider(0.0, 1.0, value=HIRES_DENOISE, step=0.01, label="Denoising strength")
            f["hr_scale"] = gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by")
        with gr.Row():
            f["hr_resize_x"] = gr.Slider(0, r.max_width, value=0, step=8, label="Resize width to")
            f["hr_resize_y"] = gr.Slider(0, r.max_height, value=0, step=8, label="Resize height to")
        f["hr_checkpoint_name"] = gr.Dropdown([SAME_CHECKPOINT, *choices.models], value=SAME_CHECKPOINT,
                                              label="Hires checkpoint",
                                              elem_id="txt2img_hr_checkpoint", elem_classes=[DATA_CHOICES_CLASS])
        with gr.Row():
            f["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *choices.samplers], value=SAME_SAMPLER,
                                               label="Hires sampling method",
                                               elem_id="txt2img_hr_sampler", elem_classes=[DATA_CHOICES_CLASS])
            f["hr_scheduler"] = gr.Dropdown([SAME_SCHEDULER, *choices.schedulers], value=SAME_SCHEDULER,
                                            label="Hires schedule type",
                                            elem_id="txt2img_hr_scheduler", elem_classes=[DATA_CHOICES_CLASS])
        f["hr_prompt"] = gr.Textbox(label="Hires prompt", lines=2, max_lines=8, elem_id="txt2img_hr_prompt",
                                    placeholder="Prompt for hires fix pass.\nLeave empty to use the same prompt "
                                                "as in first pass.")
        f["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt", lines=2, max_lines=8,
                                             elem_id="txt2img_hr_neg_prompt",
                                             placeholder="Negative prompt for hires fix pass.\nLeave empty to use "
                                                         "the same negative prompt as in first pass.")


def _refiner_controls(kind: str, f: dict[str, gr.components.Component], choices: Choices) -> None:
    """A1111's Refiner accordion: a second checkpoint takes over at "Switch at" of the sampling."""
    with gr.Accordion("Refiner", open=False, elem_id=f"{kind}_refiner"):
        with gr.Row():
            f["refiner_checkpoint"] = gr.Dropdown([NO_REFINER, *choices.models], value=NO_REFINER,
                                                  label="Checkpoint", elem_id=f"{kind}_refiner_checkpoint",
                                                  elem_classes=[DATA_CHOICES_CLASS],
                                                  info="sampling goes on with this model (e.g. the SDXL refiner)")
            f["refiner_switch_at"] = gr.Slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                                               elem_id=f"{kind}_refiner_switch_at",
                                               info="fraction of the sampling done before the switch")


def _inpaint_controls(f: dict[str, gr.components.Component]) -> None:
    with gr.Accordion("Inpaint settings", open=False, elem_id="img2img_inpaint_settings"):
        f["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur")
        f["mask_mode"] = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], label="Mask mode")
        f["inpainting_fill"] = gr.Radio(list(MASKED_CONTENT), value=MASKED_CONTENT[1], label="Masked content")
        f["inpaint_area"] = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area")
        f["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4,
                                                  label="Only masked padding, pixels")


def _first(options: list[str], preferred: str) -> str | None:
    if preferred in options:
        return preferred
    return options[0] if options else None
