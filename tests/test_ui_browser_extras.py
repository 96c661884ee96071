"""The Extras tab in a real headless Chromium: a model upscaler from models/ESRGAN makes a 4x
image that is shown and saved under outputs/extras-images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _image_size, _screenshot, _wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing")]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from sdcloud.upscalers import fixtures

    data = tmp_path_factory.mktemp("ui-extras")
    fixtures.save_esrgan_old(data / "models" / "ESRGAN" / "4x-UltraSharp.pth")
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
