"""The web UI: A1111's tabs and vocabulary as Gradio Blocks, mounted on the API's FastAPI app.

Every action goes through the same ``Services`` functions the HTTP routes call, so the UI,
``/sdapi/v1`` clients and the queue see one state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr
from fastapi import FastAPI

from sdcloud.ui.choices import Choices, load_choices
from sdcloud.ui.controlnet_panel import restore_values
from sdcloud.ui.controls import GenerationPanel
from sdcloud.ui.extras_tab import extras_tab
from sdcloud.ui.follow import run_with_progress
from sdcloud.ui.history_tab import history_tab, wire_history
from sdcloud.ui.i18n import (
    DATA_CHOICES_CLASS,
    SHOW_CHOICE_JS,
    UiLanguageMiddleware,
    language_switch,
    translate_ui,
    ui_i18n,
)
from sdcloud.ui.img2img import img2img_tab
from sdcloud.ui.labels import settings_note
from sdcloud.ui.merge_tab import merge_tab, status_line
from sdcloud.ui.params import (
    NO_REFINER,
    SAME_CHECKPOINT,
    SAME_SAMPLER,
    SAME_SCHEDULER,
    fit_choices,
    image_to_send,
    infotext_to_txt2img,
    match_checkpoint,
)
from sdcloud.ui.pnginfo import PngInfoTab, png_info_tab
from sdcloud.ui.progress import BAR_CSS
from sdcloud.ui.queue_tab import TABLE_CSS, queue_tab
from sdcloud.ui.settings_tab import settings_tab
from sdcloud.ui.train_tab import train_tab
from sdcloud.ui.txt2img import txt2img_tab

UI_CSS = BAR_CSS + """
.sd-actions button { min-height: 3em; }
.sd-token-counter { text-align: right; font-size: .8em; opacity: .7; margin-top: -0.5em !important;
  min-height: 0 !important; }
#quicksettings { align-items: flex-end; }
.sd-image-buttons button { min-width: 0 !important; }
@media (max-width: 640px) {
  .gradio-container { padding: 4px !important; }
  .sd-actions { flex-direction: row !important; flex-wrap: wrap; }
  .sd-actions > * { flex: 1 1 45% !important; }
  .sd-seed-row { flex-wrap: nowrap !important; }
  .sd-main-row { flex-direction: column !important; }
  .sd-results { width: 100% !important; }
  /* txt2img: prompt, Generate, then progress and results above the parameters
     (img2img keeps its image first: it is what you start from) */
  .sd-txt2img .sd-results { order: -1; }
  .sd-image-buttons { flex-wrap: wrap !important; }
  .sd-image-buttons > * { flex: 1 1 40% !important; }
  .sd-history-main > * { min-width: 0 !important; width: 100% !important; max-width: 100%; }
  #history_gallery { max-width: 100%; overflow: hidden; }
  #history_page_info { min-width: 0 !important; text-align: center; font-size: .85em; }
}
"""


# Ctrl+Enter (Cmd+Enter) in a prompt box presses that tab's Generate, as in A1111.
UI_HEAD = """<script>
document.addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || !e.target.closest) return;
  const box = e.target.closest("#txt2img_prompt, #txt2img_neg_prompt, #img2img_prompt, #img2img_neg_prompt");
  if (!box) return;
  e.preventDefault();
  document.getElementById(box.id.split("_")[0] + "_generate")?.click();
});
</script>"""


def _model_bar(services: Any, choices: Choices) -> tuple[gr.Dropdown, gr.Dropdown]:
    with gr.Row(elem_id="quicksettings"):
        model = gr.Dropdown(choices.models, value=choices.current_model, label="Stable Diffusion checkpoint",
                            scale=3, min_width=220, elem_id="sd_model_checkpoint",
                            elem_classes=[DATA_CHOICES_CLASS])
        refresh = gr.Button("↻", scale=0, min_width=48, elem_id="refresh_models")
        vae = gr.Dropdown(choices.vaes, value=choices.current_vae, label="SD VAE", scale=2, min_width=160,
                          elem_id="sd_vae", elem_classes=[DATA_CHOICES_CLASS])
    status = gr.HTML("", elem_id="model_status")

    def switch_model(title: str) -> Iterator[str]:
        for step in run_with_progress(lambda: services.set_model(title), f"Loading {title}", f"Loaded {title}"):
            yield step.bar

    def switch_vae(name: str) -> Iterator[str]:
        for step in run_with_progress(lambda: services.options_set({"sd_vae": name}), f"Loading VAE {name}",
                                      f"VAE: {name}"):
            yield step.bar

    model.input(switch_model, inputs=model, outputs=status, show_progress="hidden")
    vae.input(switch_vae, inputs=vae, outputs=status, show_progress="hidden")
    refresh.click(services.refresh, outputs=None).then(
        lambda: _dropdowns(load_choices(services))[:2], outputs=[model, vae], show_progress="hidden")
    return model, vae


def _dropdowns(c: Choices) -> tuple[gr.Dropdown, gr.Dropdown, gr.Dropdown, gr.Dropdown]:
    """Fresh model, VAE and LoRA lists (read on each page load and on ↻)."""
    return (gr.Dropdown(choices=c.models, value=c.current_model),
            gr.Dropdown(choices=c.vaes, value=c.current_vae),
            gr.Dropdown(choices=c.loras, value=None), gr.Dropdown(choices=c.loras, value=None))


def _wire_send_to(tabs: gr.Tabs, source: GenerationPanel, img2img: GenerationPanel) -> None:
    """"Send to img2img / inpaint": the selected gallery image and the prompts go across."""
    x = img2img.extra
    common = [img2img.fields["prompt"], img2img.fields["negative_prompt"], tabs, x["tabs"], x["mode"]]

    def selected_path(result: dict[str, Any] | None, index: int) -> str:
        path = image_to_send(result, index)
        if path is None:
            raise gr.Error("Generate an image first.")
        return path

    inputs = [source.result, source.selected, source.fields["prompt"], source.fields["negative_prompt"]]
    source.send_to_img2img.click(
        lambda r, i, p, n: (selected_path(r, i), p, n, gr.Tabs(selected="img2img"),
                            gr.Tabs(selected="img2img"), "img2img"),
        inputs=inputs, outputs=[x["init"], *common])
    source.send_to_inpaint.click(
        lambda r, i, p, n: (selected_path(r, i), p, n, gr.Tabs(selected="img2img"),
                            gr.Tabs(selected="inpaint"), "inpaint"),
        inputs=inputs, outputs=[x["editor"], *common])


def _txt2img_sender(txt2img: GenerationPanel, choices: Choices) -> Any:
    """Parsed infotext -> updates of the txt2img form (and the tab switch), for PNG Info and History."""
    keys = txt2img.keys

    def send(params: dict[str, Any]) -> list[Any]:
        if not params:
            raise gr.Error("Drop a PNG with generation parameters first.")
        values = infotext_to_txt2img(params, ranges=choices.ranges)
        for key in ("hr_checkpoint_name", "refiner_checkpoint"):  # "name [hash]" -> the dropdown's title
            if key in values and values[key] not in (SAME_CHECKPOINT, NO_REFINER):
                values[key] = match_checkpoint(values[key], choices.models) or values[key]
        values, dropped = fit_choices(values, {"sampler_name": choices.samplers,
                                               "scheduler": choices.schedulers,
                                               "hr_upscaler": choices.upscalers,
                                               "hr_sampler_name": [SAME_SAMPLER, *choices.samplers],
                                               "hr_scheduler": [SAME_SCHEDULER, *choices.schedulers],
                                               "hr_checkpoint_name": [SAME_CHECKPOINT, *choices.models],
                                               "refiner_checkpoint": [NO_REFINER, *choices.models]})
        # the labels the form shows for these fields
        labels = {"sampler_name": "Sampling method", "scheduler": "Schedule type", "hr_upscaler": "Upscaler",
                  "hr_sampler_name": "Hires sampling method", "hr_scheduler": "Hires schedule type",
                  "hr_checkpoint_name": "Hires checkpoint", "refiner_checkpoint": "Refiner checkpoint"}
        for key, value in dropped.items():
            gr.Warning(f"{labels.get(key, key)} '{value}' is not available here; kept the current one.")
        note = settings_note(params)
        if note:
            gr.Info(note)
        cn = restore_values(params, folder)
        return [values.get(k, gr.skip()) for k in keys] + cn + [gr.Tabs(selected="txt2img")]

    folder = txt2img.extra["controlnet"].folder
    return send


def _wire_png_info(tabs: gr.Tabs, png: PngInfoTab, txt2img: GenerationPanel, choices: Choices) -> None:
    png.send_to_txt2img.click(_txt2img_sender(txt2img, choices), inputs=png.params_state,
                              outputs=txt2img.inputs + txt2img.extra["controlnet"].restorable + [tabs])


def build_ui(services: Any, translations: gr.I18n | None = None) -> gr.Blocks:
    """The whole UI as one ``gr.Blocks`` (mount it with :func:`mount_ui`, which passes the
    same ``translations`` to Gradio). Texts are written in English; see :mod:`sdcloud.ui.i18n`."""
    translations = translations or ui_i18n()
    choices = load_choices(services)
    with gr.Blocks(title="sdcloud", analytics_enabled=False) as blocks:
        model, vae = _model_bar(services, choices)
        status_line(services)
        with gr.Tabs(selected="txt2img", overflow_behavior="wrap", elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img") as t2i_tab:
                txt2img = txt2img_tab(services, choices)
            with gr.Tab("img2img", id="img2img") as i2i_tab:
                img2img = img2img_tab(services, choices)
            with gr.Tab("Extras", id="extras") as x_tab:
                extras = extras_tab(services)
            with gr.Tab("PNG Info", id="pnginfo") as png_tab:
                png = png_info_tab(services)
            with gr.Tab("History", id="history") as h_tab:
                history = history_tab(services)
            with gr.Tab("Queue", id="queue") as q_tab:
                timer = queue_tab(services)
            with gr.Tab("Merge", id="merge") as m_tab:
                merge_tab(services)
            with gr.Tab("Train", id="train"):
                train_tab(services)
            with gr.Tab("Settings", id="settings") as s_tab:
                lang = language_switch()
                settings = settings_tab(services)
        for tab in (t2i_tab, i2i_tab, x_tab, png_tab, h_tab, m_tab, s_tab):
            tab.select(lambda: gr.Timer(active=False), outputs=timer, show_progress="hidden")
        q_tab.select(lambda: gr.Timer(active=True), outputs=timer, show_progress="hidden")
        _wire_send_to(tabs, txt2img, img2img)
        _wire_send_to(tabs, img2img, img2img)
        _wire_png_info(tabs, png, txt2img, choices)
        h_tab.select(history.refresh, inputs=history.load_inputs, outputs=history.load_outputs,
                     show_progress="hidden")  # fresh each time the tab opens
        wire_history(tabs, history, txt2img, img2img, extras["image"], _txt2img_sender(txt2img, choices))
        # One load event refreshes every list and setting, then marks the page ready (tests
        # wait for the mark so they do not race the refresh).
        checkpoint_lists = [txt2img.fields["hr_checkpoint_name"], txt2img.fields["refiner_checkpoint"],
                            img2img.fields["refiner_checkpoint"]]

        def on_load() -> list[Any]:
            c = load_choices(services)
            styles = [gr.Dropdown(choices=c.styles)] * 2
            checkpoints = [gr.Dropdown(choices=[SAME_CHECKPOINT, *c.models]),
                           *[gr.Dropdown(choices=[NO_REFINER, *c.models])] * 2]
            return [*_dropdowns(c), *styles, *checkpoints, *settings.refresh()]

        blocks.load(on_load,
                    outputs=[model, vae, txt2img.lora, img2img.lora, txt2img.extra["styles"].dropdown,
                             img2img.extra["styles"].dropdown, *checkpoint_lists, *settings.outputs],
                    show_progress="hidden").then(
            None, js="() => { document.body.dataset.sdcloudReady = '1'; }")
        blocks.load(None, outputs=lang, js=SHOW_CHOICE_JS, show_progress="hidden")
        translate_ui(blocks, translations)  # before the with block ends: Gradio builds the config then
    return blocks


def mount_ui(app: FastAPI, services: Any, path: str = "/", **mount_kwargs: Any) -> FastAPI:
    """Mount the UI on ``app`` with its stylesheet; files are served from the outputs folder only.

    ``mount_kwargs`` go to ``gr.mount_gradio_app`` (e.g. ``auth_dependency``). The footer keeps
    only Gradio's display settings: the HTTP API to use is A1111's, documented at ``/docs``.
    """
    translations = ui_i18n()
    app.add_middleware(UiLanguageMiddleware, default=getattr(services.settings, "lang", None), path=path)
    return gr.mount_gradio_app(
        app, build_ui(services, translations), path=path, css=UI_CSS + TABLE_CSS, head=UI_HEAD, ssr_mode=False,
        run_history=False, footer_links=["settings"], allowed_paths=[str(services.settings.outputs_path)],
        i18n=translations, **mount_kwargs,
    )
