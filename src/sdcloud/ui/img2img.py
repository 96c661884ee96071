"""The img2img tab and its A1111 sub-tabs: img2img, Sketch, Inpaint, Inpaint sketch, Inpaint
upload and Batch (folders on the server's disk)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from PIL import Image

from sdcloud.api.img2img_batch import scaled_size
from sdcloud.errors import SdcloudError
from sdcloud.image_files import encode_image
from sdcloud.ui.choices import Choices
from sdcloud.ui.controlnet_panel import controlnet_panel
from sdcloud.ui.controls import GenerationPanel, generation_panel
from sdcloud.ui.follow import run_with_progress
from sdcloud.ui.gen_extras import wire_extras
from sdcloud.ui.inpaint_mask import (
    editor_background,
    inpaint_inputs,
    inpaint_sketch_inputs,
    resize_preview,
    sketched_image,
    upload_mask,
)
from sdcloud.ui.job_polling import BATCH_PREFIX, POLL_SECONDS, run_generation, wire_panel
from sdcloud.ui.params import img2img_request, snap_size
from sdcloud.ui.progress import bar_html
from sdcloud.ui.styles_panel import wire_styles

MODES = ("img2img", "sketch", "inpaint", "inpaint_sketch", "inpaint_upload", "batch")
INPAINT_MODES = ("inpaint", "inpaint_sketch", "inpaint_upload")
SKETCH_COLORS = ["#000000", "#ffffff", "#e03131", "#f08c00", "#ffd43b", "#2f9e44", "#1971c2", "#9c36b5"]
DEFAULT_BRUSH = 16


def _brush(mode: str, size: int) -> gr.Brush:
    """The inpaint editor paints white (the mask); the sketch editors have a palette and a picker."""
    if mode == "inpaint":
        return gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed", default_size=size)
    return gr.Brush(colors=SKETCH_COLORS, default_color="#000000", color_mode="defaults", default_size=size)


def _editor(mode: str, label: str, elem_id: str) -> gr.ImageEditor:
    return gr.ImageEditor(
        type="pil", label=label, height=360, sources=("upload", "clipboard"), transforms=(), layers=False,
        brush=_brush(mode, DEFAULT_BRUSH), eraser=gr.Eraser(default_size=DEFAULT_BRUSH), format="png",
        elem_id=elem_id,
    )


def _image_inputs() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Tabs(selected="img2img", overflow_behavior="wrap", elem_id="img2img_mode_tabs") as tabs:
        with gr.Tab("img2img", id="img2img") as t_plain:
            c["init"] = gr.Image(type="pil", image_mode="RGB", label="Image for img2img", height=360,
                                 sources=["upload", "clipboard"], elem_id="img2img_image")
        with gr.Tab("Sketch", id="sketch") as t_sketch:
            c["sketch"] = _editor("sketch", "Image for img2img: draw on it, the drawing is kept", "img2img_sketch")
        with gr.Tab("Inpaint", id="inpaint") as t_inpaint:
            c["editor"] = _editor("inpaint", "Image for inpainting: paint the area to repaint",
                                  "img2img_inpaint_editor")
        with gr.Tab("Inpaint sketch", id="inpaint_sketch") as t_isketch:
            c["inpaint_sketch"] = _editor("inpaint_sketch", "Image for inpainting: draw what to repaint, in colour",
                                          "img2img_inpaint_sketch")
            c["mask_alpha"] = gr.Slider(0, 100, value=0, step=1, label="Mask transparency",
                                        elem_id="img2img_mask_alpha")
        with gr.Tab("Inpaint upload", id="inpaint_upload") as t_upload:
            with gr.Row():
                c["upload_image"] = gr.Image(type="pil", image_mode="RGB", label="Image for inpainting",
                                             height=300, sources=["upload", "clipboard"],
                                             elem_id="img2img_inpaint_upload_image")
                c["mask_upload"] = gr.Image(type="pil", image_mode="RGBA", label="Mask (white = repaint)",
                                            height=300, sources=["upload", "clipboard"],
                                            elem_id="img2img_mask_upload")
        with gr.Tab("Batch", id="batch") as t_batch:
            gr.Markdown("Process every image of a folder on the server with the settings below. Folders are "
                        "inside the data folder (relative paths start there) or one allowed with "
                        "`--allow-batch-dir`. Add inpaint masks from a mask folder: a file with the same "
                        "name as each image, or one mask for all.")
            c["batch_input"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
            c["batch_output"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
            c["batch_mask"] = gr.Textbox(label="Inpaint batch mask directory (optional)",
                                         elem_id="img2img_batch_inpaint_mask_dir")
    c["brush_size"] = gr.Slider(1, 128, value=DEFAULT_BRUSH, step=1, label="Brush size", visible=False,
                                info="for the Sketch and Inpaint editors", elem_id="img2img_brush_size")
    mode = gr.State("img2img")
    for tab, name in zip((t_plain, t_sketch, t_inpaint, t_isketch, t_upload, t_batch), MODES, strict=True):
        tab.select(lambda n=name: n, outputs=mode, show_progress="hidden")
    mode.change(lambda m: gr.Slider(visible=m in EDITOR_KEYS), inputs=mode, outputs=c["brush_size"],
                show_progress="hidden")  # shown on the sub-tabs with a brush
    editors = [(c["sketch"], "sketch"), (c["editor"], "inpaint"), (c["inpaint_sketch"], "inpaint_sketch")]
    c["brush_size"].change(
        lambda size: [gr.ImageEditor(brush=_brush(m, int(size)), eraser=gr.Eraser(default_size=int(size)))
                      for _, m in editors],
        inputs=c["brush_size"], outputs=[e for e, _ in editors], show_progress="hidden",
        trigger_mode="always_last")
    return {"tabs": tabs, "mode": mode, **c}


IMAGE_KEYS = ("init", "sketch", "editor", "inpaint_sketch", "upload_image", "mask_upload")
EDITOR_KEYS = {"sketch": "sketch", "inpaint": "editor", "inpaint_sketch": "inpaint_sketch"}  # mode -> key


def source_image(mode: str, images: dict[str, Any]) -> Image.Image | None:
    """The picture of the active sub-tab (for 📐 and the *Resize by* line)."""
    if mode == "img2img":
        return images["init"] if isinstance(images["init"], Image.Image) else None
    if mode in EDITOR_KEYS:
        return editor_background(images[EDITOR_KEYS[mode]])
    if mode == "inpaint_upload":
        return images["upload_image"] if isinstance(images["upload_image"], Image.Image) else None
    return None


def image_and_mask(mode: str, images: dict[str, Any], form: dict[str, Any], mask_alpha: float
                   ) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask) of the active sub-tab, or a ``gr.Error`` telling what is missing."""
    if mode == "sketch":
        image = sketched_image(images["sketch"])
        if image is None:
            raise gr.Error("Upload an image to sketch on first.")
        return image, None
    if mode == "inpaint":
        image, mask = inpaint_inputs(images["editor"])
        if image is None:
            raise gr.Error("Upload an image to inpaint first.")
        if mask is None:
            raise gr.Error("Paint over the area to repaint.")
        return image, mask
    if mode == "inpaint_sketch":
        image, mask = inpaint_sketch_inputs(images["inpaint_sketch"], mask_alpha, int(form.get("mask_blur", 4)))
        if image is None:
            raise gr.Error("Upload an image to inpaint first.")
        if mask is None:
            raise gr.Error("Draw over the area to repaint.")
        return image, mask
    if mode == "inpaint_upload":
        image, mask = images["upload_image"], images["mask_upload"]
        if not isinstance(image, Image.Image):
            raise gr.Error("Upload an image to inpaint first.")
        if not isinstance(mask, Image.Image):
            raise gr.Error("Upload a mask (white = repaint) first.")
        return image.convert("RGB"), upload_mask(mask, image.size)
    image = images["init"]
    if not isinstance(image, Image.Image):
        raise gr.Error("Upload an image for img2img first.")
    return image, None


def _sized(form: dict[str, Any], image: Image.Image, resize_by: bool, scale: float) -> dict[str, Any]:
    if not resize_by:
        return form
    width, height = scaled_size(image.size, scale)
    return {**form, "width": width, "height": height}


def img2img_tab(services: Any, choices: Choices) -> GenerationPanel:
    panel = generation_panel("img2img", choices, image_inputs=_image_inputs)
    x = panel.extra
    script, styles = x["script"], x["styles"]
    cn = controlnet_panel(services, "img2img")
    with gr.Row():
        interrogate_clip = gr.Button("Interrogate CLIP", elem_id="img2img_interrogate")
        interrogate = gr.Button("Interrogate DeepBooru", elem_id="img2img_deepbooru")
    interrogate_bar = gr.HTML("", elem_id="img2img_interrogate_progress")
    n_script = len(script.inputs)
    images_in = [x[k] for k in IMAGE_KEYS]
    head = [x["mode"], *images_in, x["mask_alpha"], x["resize_by"], x["scale"], styles.dropdown,
            x["batch_input"], x["batch_output"], x["batch_mask"]]
    n_head = len(head)

    def build(form: dict[str, Any], extra: list[Any]) -> dict[str, Any]:
        mode, *rest = extra[:n_head]
        images = dict(zip(IMAGE_KEYS, rest[:len(IMAGE_KEYS)], strict=True))
        mask_alpha, resize_by, scale, chosen_styles = rest[len(IMAGE_KEYS):len(IMAGE_KEYS) + 4]
        image, mask = image_and_mask(mode, images, form, float(mask_alpha or 0))
        form = _sized(form, image, bool(resize_by), float(scale or 1))
        request = {**img2img_request(form, encode_image(image), encode_image(mask) if mask is not None else None),
                   "styles": list(chosen_styles or []),
                   **script.request_fields(extra[n_head:n_head + n_script])}
        return cn.add_to(request, extra[n_head + n_script:])

    def generate(*values: Any) -> Iterator[dict[Any, Any]]:
        n = len(panel.keys)
        if values[n] != "batch":
            yield from run_generation(services, panel, build, values)
            return
        form = dict(zip(panel.keys, values[:n], strict=True))
        extra = values[n:]
        resize_by, scale, chosen_styles, *folders = extra[n_head - 6:n_head]
        placeholder = encode_image(Image.new("RGB", (8, 8)))  # each image of the folder replaces it
        request = {**img2img_request(form, placeholder, placeholder if str(folders[2] or "").strip() else None),
                   "styles": list(chosen_styles or []),
                   **script.request_fields(extra[n_head:n_head + n_script])}
        request = cn.add_to(request, list(extra[n_head + n_script:]))
        yield from run_batch(services, panel, request, tuple(folders),  # type: ignore[arg-type]
                             float(scale or 1) if resize_by else None)

    wire_panel(services, panel, build, [*head, *script.inputs, *cn.inputs], run=generate)
    _wire_sizes(panel, choices)
    wire_styles(services, styles, panel.fields["prompt"], panel.fields["negative_prompt"])
    wire_extras(services, panel)
    def tags(image: Any) -> Iterator[tuple[Any, str]]:  # generator functions: Gradio streams their steps
        yield from interrogate_steps(services, image, "deepdanbooru")

    def caption(image: Any) -> Iterator[tuple[Any, str]]:
        yield from interrogate_steps(services, image, "clip")

    for button, fn in ((interrogate, tags), (interrogate_clip, caption)):
        button.click(fn, inputs=x["init"], outputs=[panel.fields["prompt"], interrogate_bar], show_progress="hidden")
    return panel


def _wire_sizes(panel: GenerationPanel, choices: Choices) -> None:
    """📐 (width/height from the picture) and the *Resize by* line."""
    x = panel.extra
    images_in = [x["mode"], *(x[k] for k in IMAGE_KEYS)]

    def picture(mode: str, *values: Any) -> Image.Image | None:
        return source_image(mode, dict(zip(IMAGE_KEYS, values, strict=True)))

    def detect(mode: str, *values: Any) -> tuple[Any, Any]:
        image = picture(mode, *values)
        if image is None:
            raise gr.Error("Upload an image first: the size is taken from it.")
        r = choices.ranges
        return snap_size(image.width, r.max_width), snap_size(image.height, r.max_height)

    x["size_from_image"].click(detect, inputs=images_in, outputs=[panel.fields["width"], panel.fields["height"]],
                               show_progress="hidden")

    def preview(scale: float, mode: str, *values: Any) -> str:
        image = picture(mode, *values)
        return resize_preview(image.size if image is not None else None, float(scale or 1))

    triggers = [x["scale"].change, x["mode"].change, x["init"].change, x["upload_image"].change,
                *(x[k].upload for k in ("sketch", "editor", "inpaint_sketch"))]
    gr.on(triggers, preview, inputs=[x["scale"], *images_in], outputs=x["scale_preview"], show_progress="hidden",
          trigger_mode="always_last", concurrency_limit=None)


def run_batch(services: Any, panel: GenerationPanel, request: dict[str, Any], folders: tuple[str, str, str],
              scale: float | None) -> Iterator[dict[Any, Any]]:
    """Generate on the Batch tab: start the server-side batch with the tab's img2img
    ``request`` (script and ControlNet included; its images are replaced per input), show its
    progress, then the images written."""
    in_dir, out_dir, mask_dir = (str(f or "") for f in folders)
    try:
        batch = services.batches.start(request, in_dir, out_dir, mask_dir, scale)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    view = batch.view()
    yield {panel.job_id: BATCH_PREFIX + batch.id, panel.progress: batch_html(view),
           panel.preview: gr.Image(value=None, visible=False)}
    while view["state"] == "running":
        time.sleep(POLL_SECONDS)
        view = services.batches.view(batch.id)
        yield {panel.progress: batch_html(view)}
    for error in view["errors"]:
        gr.Warning(error)
    paths = [str(p) for p in batch.saved]  # the copies in outputs/: the only folder the page may show
    yield {panel.job_id: None, panel.progress: batch_html(view), panel.gallery: paths,
           panel.result: {"paths": paths, "info": {}}, panel.selected: 0,
           panel.infotext: f"{len(paths)} images written to {batch.output_dir}"}


def batch_html(view: dict[str, Any]) -> str:
    """A batch's bar: "Image 2/5 · Step 3/20", then "Done: 5 images written to ..."."""
    total, finished, steps = view["total"], view["finished"], view.get("steps") or 0
    fraction = (finished + (view.get("step", 0) / steps if steps else 0)) / total if total else 1.0
    if view["state"] == "running":
        step = f" · Step {view['step']}/{steps}" if steps else ""
        return bar_html("running", fraction, f"Image {min(finished + 1, total)}/{total}{step}")
    if view["state"] == "done":
        return bar_html("done", 1.0, f"Done: {len(view['written'])} images written to {view['output_dir']}")
    if view["state"] == "cancelled":
        return bar_html("cancelled", fraction, f"Interrupted after {finished}/{total} images")
    return bar_html("failed", fraction, "Failed: " + "; ".join(view["errors"][-1:]))


def interrogate_steps(services: Any, image: Any, model: str) -> Iterator[tuple[Any, str]]:
    """Interrogate with the shared progress bar: (prompt update, bar) per step."""
    if image is None:
        raise gr.Error("Upload an image for img2img first.")
    label = "Interrogating (CLIP)" if model == "clip" else "Interrogating (DeepBooru)"
    for step in run_with_progress(lambda: interrogate_prompt(services, image, model), label, "Done"):
        yield (step.value if step.done else gr.skip()), step.bar


def interrogate_prompt(services: Any, image: Any, model: str = "deepdanbooru") -> str:
    """The img2img image's tags (A1111's Interrogate DeepBooru button) or, with ``model``
    ``clip``, its BLIP + CLIP caption (Interrogate CLIP), as the prompt."""
    if image is None:
        raise gr.Error("Upload an image for img2img first.")
    try:
        if model == "clip":
            from sdcloud.api.routes_extras import clip_options

            return services.interrogator.caption(image, "clip", clip_options(services))
        return services.interrogator.caption(image, "deepdanbooru")
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
