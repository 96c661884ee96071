"""**Save** and **Zip** under the txt2img/img2img galleries, as in A1111: Save copies the
selected image (all of them when none is selected, or with the ``save_selected_only`` option
off) into ``outputs/save`` with a ``log.csv`` row each; Zip offers all current results as one
download (written to ``outputs/save`` too, as A1111 does). Both go through ``services.history``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.controls import GenerationPanel


def _paths(result: dict[str, Any] | None) -> list[str]:
    paths = list((result or {}).get("paths") or [])
    if not paths:
        raise gr.Error("Generate an image first.")
    return paths


def save_results(services: Any, result: dict[str, Any] | None, picked: int) -> tuple[Any, str]:
    paths = _paths(result)
    selected_only = bool(services.options.get().get("save_selected_only", True))
    if selected_only and 0 <= picked < len(paths):
        paths = [paths[picked]]
    try:
        saved = services.history.save(paths)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    services.persistence.add(saved)  # to the store too, when one is set
    more = f" and {len(saved) - 1} more" if len(saved) > 1 else ""
    return gr.File(value=[str(p) for p in saved], visible=True), f"Saved: {saved[0].name}{more}"


def zip_results(services: Any, result: dict[str, Any] | None) -> tuple[Any, str]:
    paths = _paths(result)
    model = str(((result or {}).get("info") or {}).get("sd_model_name") or "") or None
    try:
        archive = services.history.zip(paths, services.history.root / "save", model=model)
    except SdcloudError as exc:
        raise gr.Error(str(exc)) from None
    return gr.File(value=[str(archive)], visible=True), f"Zip: {archive.name} ({len(paths)} images)"


def wire_save_zip(services: Any, panel: GenerationPanel) -> None:
    x = panel.extra
    picked = gr.State(-1)  # the gallery image the user clicked; -1 until then (A1111: none selected)

    def pick(evt: gr.SelectData) -> int:
        return int(evt.index)

    panel.gallery.select(pick, inputs=None, outputs=picked, show_progress="hidden")
    panel.gallery.change(lambda: -1, outputs=picked, show_progress="hidden")
    outputs = [x["download"], x["save_log"]]
    x["save"].click(lambda r, i: save_results(services, r, i), inputs=[panel.result, picked], outputs=outputs)
    x["save_zip"].click(lambda r: zip_results(services, r), inputs=panel.result, outputs=outputs)
