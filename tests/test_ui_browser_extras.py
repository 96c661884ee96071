"""The Extras tab, the ControlNet panel and the Interrogate button in a real headless Chromium:
a model upscaler from models/ESRGAN makes a 4x image that is shown and saved; a txt2img with a
ControlNet unit writes its ``ControlNet 0`` infotext; the tagger fills img2img's prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch
from test_ui_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _image_size,
    _screenshot,
    _set_slider,
    _wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing")]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from sdcloud.upscalers import fixtures

    data = tmp_path_factory.mktemp("ui-extras")
    fixtures.save_esrgan_old(data / "models" / "ESRGAN" / "4x-UltraSharp.pth")
    from sdcloud.controlnet.fixtures import save_controlnet
    from sdcloud.engine.demo import build_demo_pipeline
    from test_interrogate import write_tagger

    save_controlnet(data / "models" / "ControlNet" / "control_tiny_canny.safetensors",
                    build_demo_pipeline("sd15").unet)
    write_tagger(data / "models" / "interrogators" / "wd-tiny")
    server = launch(data, ui=True, env=TIGHT_LIMITS)
    yield server
    server.stop()


def test_extras_tab_upscales_with_a_model(server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "small.png"
    Image.new("RGB", (24, 16), "orange").save(src)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url + "/")
        _wait_ready(page)
        page.get_by_role("tab", name="Extras").click()
        page.locator("#extras_image input[type=file]").set_input_files(str(src))
        page.wait_for_selector("#extras_image img")
        assert page.input_value("#extras_upscaler_1 input") == "4x-UltraSharp"
        page.click("#extras_generate")
        page.wait_for_function("document.querySelector('#extras_info textarea').value.includes('Saved')")
        assert "Postprocess upscaler: 4x-UltraSharp" in page.input_value("#extras_info textarea")
        assert _image_size(page, "#extras_result img") == [96, 64]
        _screenshot(page, "extras_tab.png")
        browser.close()
    saved = sorted((server.data_dir / "outputs" / "extras-images").rglob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (96, 64)


def _page(browser: object, server: ServerProcess) -> object:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    _wait_ready(page)
    return page


def test_controlnet_panel_and_interrogate(server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    hint = tmp_path / "ring.png"
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), outline="black", width=4)
    img.save(hint)
    green = tmp_path / "green.png"
    Image.new("RGB", (64, 64), (0, 200, 0)).save(green)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = _page(browser, server)
        page.fill("#txt2img_prompt textarea", "a ring")
        for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
            _set_slider(page, elem_id, value)
        page.get_by_text("ControlNet").first.click()
        page.check("#txt2img_controlnet_enable input")
        page.locator("#txt2img_controlnet_image input[type=file]").set_input_files(str(hint))
        page.wait_for_selector("#txt2img_controlnet_image img")
        assert page.input_value("#txt2img_controlnet_model input") == "control_tiny_canny"
        page.click("#txt2img_generate")
        page.wait_for_function(
            "document.querySelector('#txt2img_infotext textarea').value.includes('ControlNet 0')")
        text = page.input_value("#txt2img_infotext textarea")
        assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny, Weight: 1' in text
        _screenshot(page, "controlnet_panel.png")

        page.get_by_role("tab", name="img2img").first.click()
        page.locator("#img2img_image input[type=file]").set_input_files(str(green))
        page.wait_for_selector("#img2img_image img")
        page.click("#img2img_deepbooru")
        page.wait_for_function("document.querySelector('#img2img_prompt textarea').value === 'green background'")
        browser.close()
