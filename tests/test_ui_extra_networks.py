"""Extra-network cards: previews found where A1111 looks (``name.preview.png``), search,
LoRA ``ss_*`` metadata, and a rescan that shows a file copied in after start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import save_file

from sdcloud.api.app import create_app
from sdcloud.settings import Settings
from sdcloud.ui.extra_networks import list_cards, lora_metadata, preview_path


def _lora(folder: Path, name: str, **meta: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({"lora_unet_x.lora_down.weight": np.zeros((4, 8), np.float32)}, str(path), metadata=meta or None)
    return path


def test_cards_previews_search_metadata_and_refresh(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": tmp_path, "model": "demo"}, env={})
    lora_dir = settings.lora_path
    _lora(lora_dir, "detail_tweaker", ss_output_name="detail", ss_network_dim="16", other="x")
    Image.new("RGB", (300, 200), "red").save(lora_dir / "detail_tweaker.preview.png")
    _lora(lora_dir, "flat_color")
    with TestClient(create_app(settings, ui=False)) as client:
        services = client.app.state.services
        cards = list_cards(services, "LoRA")
        assert [c["name"] for c in cards] == ["detail_tweaker", "flat_color"]
        assert cards[0]["preview"] == lora_dir / "detail_tweaker.preview.png" and cards[1]["preview"] is None
        assert [c["name"] for c in list_cards(services, "LoRA", "FLAT")] == ["flat_color"]
        assert lora_metadata(services, "detail_tweaker") == {"ss_output_name": "detail", "ss_network_dim": "16"}
        _lora(lora_dir, "added_later")
        services.refresh()
        assert "added_later" in [c["name"] for c in list_cards(services, "LoRA")]
    assert preview_path(lora_dir / "flat_color.safetensors") is None
