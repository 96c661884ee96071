"""The Extras tab, the ControlNet panel and the Interrogate button in a real headless Chromium,
at desktop and phone sizes: a model upscaler from models/ESRGAN makes a 4x image that is shown
and saved; a txt2img with a ControlNet unit (its preprocessor resolution and threshold set)
writes its ``ControlNet 0`` infotext, and PNG Info restores the unit into the panel; the tagger
fills img2img's prompt."""

from __future__ import annotations

import time
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
    from interrogate_models import write_clip_interrogator

    write_clip_interrogator(data / "models")
    server = launch(data, ui=True, env=TIGHT_LIMITS)
    yield server
    server.stop()


SIZES = [pytest.param((1280, 900), id="desktop"), pytest.param((390, 844), id="phone")]


def _no_sideways_scroll(page: object, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", SIZES)
def test_extras_tab_upscales_with_a_model(server: ServerProcess, tmp_path: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    src = tmp_path / "small.png"
    Image.new("RGB", (24, 16), "orange").save(src)
    folder = server.data_dir / "outputs" / "extras-images"
    started = time.time() - 1
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url + "/")
        _wait_ready(page)
        page.get_by_role("tab", name="Extras").click()
        page.locator("#extras_image input[type=file]").set_input_files(str(src))
        page.wait_for_selector("#extras_image img")
        assert page.input_value("#extras_upscaler_1 input") == "4x-UltraSharp"
        page.click("#extras_generate")
        page.wait_for_function("document.querySelector('#extras_info textarea').value.includes('Saved')")
        info = page.input_value("#extras_info textarea")
        assert "Postprocess upscaler: 4x-UltraSharp" in info
        assert page.locator("#extras_progress .sd-progress.sd-done").inner_text() == "Done"  # the one bar
        assert _image_size(page, "#extras_result img") == [96, 64]
        _no_sideways_scroll(page, size[0])
        box = page.locator("#extras_generate").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= size[0]
        _screenshot(page, f"extras_tab_{size[0]}.png")
        browser.close()
    name = info.split("Saved: ")[1].strip()  # extras-images/<date>/NNNNN.png, numbered on
    saved = [p for p in folder.rglob(name) if p.stat().st_mtime >= started]
    assert len(saved) == 1 and Image.open(saved[0]).size == (96, 64)


def _page(browser: object, server: ServerProcess, size: tuple[int, int] = (1280, 1000)) -> object:
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})  # type: ignore[attr-defined]
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
        _set_slider(page, "txt2img_controlnet_processor_res", 256)
        _set_slider(page, "txt2img_controlnet_threshold_a", 50)
        _set_slider(page, "txt2img_controlnet_weight", 0.8)
        page.click("#txt2img_generate")
        page.wait_for_function(
            "document.querySelector('#txt2img_infotext textarea').value.includes('ControlNet 0')")
        text = page.input_value("#txt2img_infotext textarea")
        assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny, Weight: 0.8' in text
        assert "Processor Res: 256, Threshold A: 50, Threshold B: 200," in text
        _screenshot(page, "controlnet_panel.png")

        # PNG Info restores the unit into the panel (as the extension does)
        saved = sorted((server.data_dir / "outputs" / "txt2img-images").rglob("*.png"))[-1]
        page.uncheck("#txt2img_controlnet_enable input")
        _set_slider(page, "txt2img_controlnet_weight", 1.5)
        _set_slider(page, "txt2img_controlnet_processor_res", 512)
        page.get_by_role("tab", name="PNG Info").click()
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved))
        page.wait_for_function("document.querySelector('#pnginfo_text textarea').value.includes('ControlNet 0')")
        page.click("#pnginfo_send_to_txt2img")
        page.wait_for_function("document.querySelector('#txt2img_controlnet_enable input').checked")
        assert page.input_value("#txt2img_controlnet_weight input[type=number]") == "0.8"
        assert page.input_value("#txt2img_controlnet_processor_res input[type=number]") == "256"
        assert page.input_value("#txt2img_controlnet_threshold_a input[type=number]") == "50"
        assert page.input_value("#txt2img_controlnet_model input") == "control_tiny_canny"

        page.get_by_role("tab", name="img2img").first.click()
        page.locator("#img2img_image input[type=file]").set_input_files(str(green))
        page.wait_for_selector("#img2img_image img")
        page.click("#img2img_deepbooru")
        page.wait_for_function("document.querySelector('#img2img_prompt textarea').value === 'green background'")
        assert page.locator("#img2img_interrogate_progress .sd-progress.sd-done").inner_text() == "Done"
        page.click("#img2img_interrogate")  # BLIP caption, then CLIP's picks from the lists
        page.wait_for_function("document.querySelector('#img2img_prompt textarea').value.includes(', by ')")
        assert page.input_value("#img2img_prompt textarea").split(", ")[1] in (
            "by Claude Monet", "by Hokusai", "by Studio Ghibli")
        browser.close()


def test_controlnet_panel_on_a_phone(server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    hint = tmp_path / "ring.png"
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), outline="black", width=4)
    img.save(hint)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = _page(browser, server, (390, 844))
        page.fill("#txt2img_prompt textarea", "a ring")
        for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 2)):
            _set_slider(page, elem_id, value)
        page.get_by_text("ControlNet").first.click()
        page.check("#txt2img_controlnet_enable input")
        page.locator("#txt2img_controlnet_image input[type=file]").set_input_files(str(hint))
        page.wait_for_selector("#txt2img_controlnet_image img")
        # a preprocessor without thresholds hides their sliders
        page.click("#txt2img_controlnet_module input")
        page.get_by_role("option", name="shuffle").click()
        page.wait_for_selector("#txt2img_controlnet_threshold_a", state="hidden")
        for elem_id in ("txt2img_controlnet_image", "txt2img_controlnet_model", "txt2img_controlnet_weight"):
            box = page.locator(f"#{elem_id}").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, elem_id
        page.click("#txt2img_generate")
        page.wait_for_function(
            "document.querySelector('#txt2img_infotext textarea').value.includes('ControlNet 0')")
        assert 'ControlNet 0: "Module: shuffle, Model: control_tiny_canny' in page.input_value(
            "#txt2img_infotext textarea")
        _no_sideways_scroll(page, 390)
        _screenshot(page, "controlnet_panel_phone.png")
        browser.close()
