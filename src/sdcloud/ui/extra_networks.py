"""Extra networks under the prompts, as A1111's cards: Checkpoints, LoRA and Textual Inversion,
each a grid of cards with the model's preview (``name.preview.png`` / ``.png`` / ``.jpg`` next
to the file, else a plain card with the name), a search box, and a click that acts:

- LoRA: inserts ``<lora:name:weight>`` into the prompt (weight from the slider), and shows the
  file's training metadata (kohya ``ss_*`` tags);
- Textual Inversion: inserts the embedding's name;
- Checkpoint: loads that model for new jobs.

**Refresh** rescans the model folders (after a merge or a download) without reloading the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.params import insert_lora

PREVIEW_SUFFIXES = (".preview.png", ".png", ".preview.jpg", ".jpg", ".jpeg", ".webp")
CARD = 192
KINDS = ("Checkpoints", "LoRA", "Textual Inversion")


def preview_path(model_path: Path) -> Path | None:
    """A1111's preview for a model file: ``<stem>.preview.png`` first, then other images."""
    base = model_path.with_suffix("") if model_path.is_file() else model_path
    for suffix in PREVIEW_SUFFIXES:
        candidate = base.parent / f"{base.name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _card(name: str, preview: Path | None) -> Any:
    from PIL import Image, ImageDraw

    if preview is not None:
        try:
            with Image.open(preview) as im:
                im.thumbnail((CARD, CARD))
                return im.convert("RGB")
        except OSError:
            pass
    card = Image.new("RGB", (CARD, CARD), (64, 64, 72))
    ImageDraw.Draw(card).text((10, CARD // 2 - 6), name[:28], fill=(230, 230, 230))
    return card


def list_cards(services: Any, kind: str, search: str = "") -> list[dict[str, Any]]:
    """The cards of one kind whose name contains ``search`` (any case)."""
    catalog = services.catalog
    files = {"Checkpoints": catalog.checkpoints, "LoRA": catalog.loras,
             "Textual Inversion": catalog.embeddings}[kind]()
    needle = (search or "").strip().lower()
    out = []
    for m in files:
        if needle and needle not in m.name.lower():
            continue
        out.append({"name": m.stem, "file": m.name, "path": m.path, "preview": preview_path(m.path)})
    return out


def lora_metadata(services: Any, name: str) -> dict[str, Any]:
    """The ``ss_*`` training tags (and other metadata) of a LoRA, as ``/sdapi/v1/loras`` gives them."""
    for entry in services.loras():
        if entry["name"] == name:
            meta = entry.get("metadata") or {}
            picked = {k: v for k, v in meta.items() if k.startswith("ss_")}
            return picked or meta
    return {}


@dataclass
class ExtraNetworks:
    accordion: gr.Accordion
    kind: gr.Radio
    search: gr.Textbox
    weight: gr.Slider
    refresh: gr.Button
    gallery: gr.Gallery
    metadata: gr.JSON
    names: gr.State


def extra_networks_controls(tab: str) -> ExtraNetworks:
    with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks") as accordion:
        with gr.Row():
            kind = gr.Radio(list(KINDS), value="LoRA", label="Show", elem_id=f"{tab}_en_kind", scale=3)
            search = gr.Textbox(label="Search", placeholder="name", elem_id=f"{tab}_en_search", scale=2)
            weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Weight on insert",
                               elem_id=f"{tab}_en_weight", scale=2)
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80, elem_id=f"{tab}_en_refresh")
        gallery = gr.Gallery(label="Cards", columns=4, height="auto", allow_preview=False, interactive=False,
                             elem_id=f"{tab}_en_cards")
        metadata = gr.JSON(label="Metadata", visible=False, elem_id=f"{tab}_en_metadata")
    return ExtraNetworks(accordion, kind, search, weight, refresh, gallery, metadata, gr.State([]))


def wire_extra_networks(services: Any, en: ExtraNetworks, prompt: gr.Textbox) -> None:
    def show(kind: str, search: str) -> tuple[list[Any], list[str], Any]:
        cards = list_cards(services, kind, search)
        return ([(_card(c["name"], c["preview"]), c["name"]) for c in cards], [c["name"] for c in cards],
                gr.JSON(visible=False))

    outputs = [en.gallery, en.names, en.metadata]
    en.accordion.expand(show, inputs=[en.kind, en.search], outputs=outputs, show_progress="hidden")
    en.kind.change(show, inputs=[en.kind, en.search], outputs=outputs, show_progress="hidden")
    en.search.change(show, inputs=[en.kind, en.search], outputs=outputs, show_progress="hidden",
                     trigger_mode="always_last")

    def refresh(kind: str, search: str) -> tuple[list[Any], list[str], Any]:
        services.refresh()
        return show(kind, search)

    en.refresh.click(refresh, inputs=[en.kind, en.search], outputs=outputs, show_progress="hidden")

    def pick(kind: str, names: list[str], weight: float, text: str, evt: gr.SelectData) -> tuple[str, Any]:
        name = names[evt.index] if 0 <= evt.index < len(names) else None
        if name is None:
            return text, gr.JSON(visible=False)
        if kind == "LoRA":
            return insert_lora(text or "", name, weight), gr.JSON(value=lora_metadata(services, name), visible=True)
        if kind == "Textual Inversion":
            t = (text or "").rstrip()
            return (f"{t}, {name}" if t and name not in t else (t or name)), gr.JSON(visible=False)
        try:
            services.set_model(name)
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Loaded {name}; new images use it")
        return text, gr.JSON(visible=False)

    en.gallery.select(pick, inputs=[en.kind, en.names, en.weight, prompt], outputs=[prompt, en.metadata],
                      show_progress="hidden")
