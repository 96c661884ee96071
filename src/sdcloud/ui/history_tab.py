"""The History tab (A1111's "image browser"): past outputs by folder and day, newest first, a
page at a time; search by prompt; each image's infotext; "send to" txt2img (its parameters),
img2img, inpaint and Extras. Reads through ``services.history``, the same object behind
``/api/history``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.history import ALL_DATES
from sdcloud.infotext import parse_infotext
from sdcloud.ui.controls import GenerationPanel
from sdcloud.ui.i18n import DATA_CLASS

PER_PAGE = 24
NO_PARAMS = "This image has no generation parameters."
KIND_CHOICES = [("txt2img", "txt2img"), ("img2img", "img2img"), ("Extras", "extras"),
                ("txt2img grids", "txt2img-grids"), ("img2img grids", "img2img-grids"), ("Saved", "save")]


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    infotext: gr.Textbox
    selected_path: gr.State  # absolute path of the image picked in the gallery
    send_to_txt2img: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button
    refresh: Callable[..., Any]  # (kind, date, q, page, selected path) -> outputs of ``load_outputs``
    load_inputs: list[Any]
    load_outputs: list[Any]


def _page_text(p: Any) -> str:
    if not p.items and p.page == 0:
        return "No images here yet." if not p.q else f"Nothing matches “{p.q}”."
    shown = f"{p.page * p.per_page + 1}–{p.page * p.per_page + len(p.items)}" if p.items else "none"
    if p.total is not None:
        text = f"Page {p.page + 1} of {p.pages} · {shown} of {p.total}"
    else:
        text = f"Page {p.page + 1} · {shown}"
    if not p.complete:
        text += f" · searched the newest {p.scanned} images; narrow the search or pick a day for more"
    return text


def history_tab(services: Any) -> HistoryTab:
    with gr.Row(equal_height=False):
        kind = gr.Dropdown(KIND_CHOICES, value="txt2img", label="Folder", min_width=150, elem_id="history_kind")
        date = gr.Dropdown([], value=None, label="Day", min_width=150, elem_id="history_date")
        query = gr.Textbox(label="Search", placeholder="words from the prompt or parameters", scale=2,
                           min_width=200, elem_id="history_search")
        search = gr.Button("Search", scale=0, min_width=90, elem_id="history_search_button")
    with gr.Row(elem_classes="sd-history-pager"):
        prev = gr.Button("◀ Previous page", size="sm", min_width=120, elem_id="history_prev")
        page_info = gr.Markdown("", elem_id="history_page_info", elem_classes=[DATA_CLASS])
        nxt = gr.Button("Next page ▶", size="sm", min_width=120, elem_id="history_next")
    with gr.Row(equal_height=False, elem_classes=["sd-main-row", "sd-history-main"]):
        with gr.Column(scale=3, min_width=300):
            gallery = gr.Gallery(label="Images", columns=6, height="auto", object_fit="contain",
                                 allow_preview=True, interactive=False, elem_id="history_gallery")
        with gr.Column(scale=2, min_width=280):
            name = gr.Markdown("", elem_id="history_name", elem_classes=[DATA_CLASS])
            infotext = gr.Textbox(label="Generation info", lines=6, max_lines=16, interactive=False,
                                  buttons=["copy"], elem_id="history_infotext")
            with gr.Row(elem_classes="sd-image-buttons"):
                to_txt2img = gr.Button("Send to txt2img", size="sm", elem_id="history_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", size="sm", elem_id="history_send_to_img2img")
                to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id="history_send_to_inpaint")
                to_extras = gr.Button("Send to extras", size="sm", elem_id="history_send_to_extras")
    page = gr.State(0)
    items = gr.State([])  # [{"path": absolute path, "name", "infotext"}] of the page shown
    selected_path = gr.State(None)
    root = services.history.root

    def load(kind_: str, date_: str | None, q: str, page_: int, selected: str | None = None) -> list[Any]:
        """The page's images; the picked image stays picked while it is on the page."""
        try:
            p = services.history.page(kind_ or "txt2img", date_ or None, q or "", max(0, int(page_)), PER_PAGE)
        except SdcloudError as exc:  # e.g. the day's folder was deleted: show the newest day
            gr.Warning(str(exc))
            p = services.history.page(kind_ or "txt2img", None, q or "", 0, PER_PAGE)
        shown = [{"path": str(root / i.path), "name": i.name, "infotext": i.infotext} for i in p.items]
        days = [("All days", ALL_DATES), *[(d, d) for d in p.dates]] if p.dates else []
        at = next((i for i, s in enumerate(shown) if s["path"] == selected), None)
        picked = ([f"`{shown[at]['name']}`", shown[at]["infotext"] or NO_PARAMS, selected] if at is not None
                  else ["", "", None])
        return [gr.Gallery(value=[(s["path"], s["name"]) for s in shown], selected_index=at),
                _page_text(p), shown, p.page, gr.Dropdown(choices=days, value=p.date), *picked,
                gr.Button(interactive=p.page > 0), gr.Button(interactive=p.has_more)]

    outputs = [gallery, page_info, items, page, date, name, infotext, selected_path, prev, nxt]
    inputs = [kind, date, query, page, selected_path]
    kind.input(lambda k, q: load(k, None, q, 0), inputs=[kind, query], outputs=outputs, show_progress="hidden")
    date.input(lambda k, d, q: load(k, d, q, 0), inputs=[kind, date, query], outputs=outputs,
               show_progress="hidden")
    for event in (search.click, query.submit):
        event(lambda k, d, q: load(k, d, q, 0), inputs=[kind, date, query], outputs=outputs, show_progress="hidden")
    prev.click(lambda k, d, q, p, s: load(k, d, q, p - 1, s), inputs=inputs, outputs=outputs,
               show_progress="hidden")
    nxt.click(lambda k, d, q, p, s: load(k, d, q, p + 1, s), inputs=inputs, outputs=outputs,
              show_progress="hidden")

    def select(shown: list[dict[str, Any]], evt: gr.SelectData) -> tuple[str, str, str | None]:
        if not 0 <= evt.index < len(shown):
            return "", "", None
        item = shown[evt.index]
        return f"`{item['name']}`", item["infotext"] or NO_PARAMS, item["path"]

    gallery.select(select, inputs=items, outputs=[name, infotext, selected_path], show_progress="hidden")
    return HistoryTab(gallery, infotext, selected_path, to_txt2img, to_img2img, to_inpaint, to_extras,
                      load, inputs, outputs)


def _picked(path: str | None) -> str:
    if not path:
        raise gr.Error("Pick an image in the History tab first.")
    return path


def wire_history(tabs: gr.Tabs, hist: HistoryTab, txt2img: GenerationPanel, img2img: GenerationPanel,
                 extras_image: Any, to_txt2img: Callable[[dict[str, Any]], list[Any]]) -> None:
    """The "send to" buttons: parameters to txt2img (as PNG Info does), the image (and its
    prompts) to img2img or inpaint, the image to Extras."""
    def params_of(path: str | None, text: str) -> dict[str, Any]:
        _picked(path)
        if not text or "Steps:" not in text:
            raise gr.Error("This image has no generation parameters.")
        return parse_infotext(text)

    hist.send_to_txt2img.click(lambda p, t: to_txt2img(params_of(p, t)), inputs=[hist.selected_path, hist.infotext],
                               outputs=txt2img.inputs + txt2img.extra["controlnet"].restorable + [tabs])
    x = img2img.extra
    common = [img2img.fields["prompt"], img2img.fields["negative_prompt"], tabs, x["tabs"], x["mode"]]

    def prompts(text: str) -> tuple[Any, Any]:
        if not text or "Steps:" not in text:
            return gr.skip(), gr.skip()
        p = parse_infotext(text)
        return p["Prompt"], p["Negative prompt"]

    hist.send_to_img2img.click(
        lambda p, t: (_picked(p), *prompts(t), gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img"), "img2img"),
        inputs=[hist.selected_path, hist.infotext], outputs=[x["init"], *common])
    hist.send_to_inpaint.click(
        lambda p, t: (_picked(p), *prompts(t), gr.Tabs(selected="img2img"), gr.Tabs(selected="inpaint"), "inpaint"),
        inputs=[hist.selected_path, hist.infotext], outputs=[x["editor"], *common])
    hist.send_to_extras.click(lambda p: (_picked(p), gr.Tabs(selected="extras")), inputs=hist.selected_path,
                              outputs=[extras_image, tabs])
