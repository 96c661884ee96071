"""The Train tab's handlers, called as Gradio calls them, on a real ``Services`` with the demo model:
upload, check, train with a live loss chart and samples, and a clear error for bad input."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pytest

from sdcloud.api.services import Services
from sdcloud.runtime import Runtime
from sdcloud.settings import Settings
from sdcloud.ui.app import build_ui
from sdcloud.ui.progress import bar_text
from training_data import make_dataset


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("ui-train"), "model": "demo"}, env={})
    services = Services(Runtime(settings))
    services.start()
    blocks = build_ui(services)
    fns = {f.fn.__name__: f.fn for f in blocks.fns.values() if getattr(f, "fn", None) is not None}
    yield services, blocks, fns
    services.stop()


def test_train_tab_is_there(ui) -> None:
    _, blocks, _ = ui
    config = blocks.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"train_dataset", "train_upload", "train_check", "train_preset", "train_start", "train_loss",
            "train_samples", "train_cancel"} <= ids


def test_upload_check_train_and_watch(ui, tmp_path: Path) -> None:
    services, _, fns = ui
    src = make_dataset(tmp_path / "src") / "5_sks cat"
    saved, _ = fns["do_upload"]("cats", [str(p) for p in sorted(src.iterdir())], "5_sks cat")
    assert "Saved 8 file(s)" in saved
    assert "Ready to train" in fns["do_check"]("cats", 64)
    job_id, text, _ = fns["submit"]("cats", "demo", "uicat", "", 4, 4, 4, 1e-2, 64, 2, 1, "AdamW", "constant",
                                    False, 2, "sks cat", False)
    assert bar_text(text).startswith(("Queued", "Training uicat")), text  # the bar every long action shows
    deadline = time.monotonic() + 240
    while True:
        bar, losses, samples, _ = fns["watch"](job_id)
        status = bar_text(bar)
        if status.startswith(("Done", "Failed", "Stopped")) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status.startswith("Done: uicat.safetensors is in models/Lora"), status
    assert 'class="sd-progress sd-done"' in bar
    assert list(losses["step"]) == [1, 2, 3, 4] and len(samples) == 2
    with pytest.raises(gr.Error, match="--rank must be > 0"):
        fns["submit"]("cats", "demo", "bad", "", 4, 0, 4, 1e-2, 64, 2, 1, "AdamW", "constant", False, 0, "", False)
    with pytest.raises(gr.Error, match="dataset 'nope' not found"):
        fns["do_check"]("nope", 64)
