"""The UI on the API's app, and its file route (Gradio's ``/gradio_api/file=``): it serves the
images in the outputs folder and nothing else by path (not system files, models, sdcloud's
own state or the source tree)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sdcloud.api.app import create_app
from sdcloud.settings import Settings
from sdcloud.ui.i18n import english


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("ui-files"), "model": "demo"}, env={})
    with TestClient(create_app(settings)) as c:
        yield c, settings


def test_ui_page_is_served(client: tuple[TestClient, Settings]) -> None:
    c, _ = client
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    config = c.get("/config").json()
    assert config["title"] == "sdcloud"
    labels = {english(comp.get("props", {}).get("label")) for comp in config["components"]}
    assert {"txt2img", "img2img", "PNG Info", "Queue", "Settings", "Stable Diffusion checkpoint"} <= labels


def test_file_route_serves_outputs_only(client: tuple[TestClient, Settings]) -> None:
    c, settings = client
    lora = settings.lora_path / "private.safetensors"
    lora.write_bytes(b"\0" * 16)
    answer = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2,
                                                "save_images": True})
    assert answer.status_code == 200
    saved = next(settings.outputs_path.rglob("*.png"))
    assert c.get(f"/gradio_api/file={saved}").content == saved.read_bytes()
    for path in (Path("/etc/passwd"), lora, settings.state_path / "options.json", Path(__file__).resolve(),
                 saved.parent / ".." / ".." / ".." / ".sdcloud" / "options.json"):
        assert c.get(f"/gradio_api/file={path}").status_code in (403, 404), path
