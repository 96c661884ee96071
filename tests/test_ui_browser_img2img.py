"""img2img's sub-tabs in a real headless Chromium against ``sdcloud serve --model demo``:
Sketch, Inpaint sketch, Inpaint upload and Batch each make images; the brush size reaches the
editor; Resize by and 📐 set the size; "Send to inpaint" sends the picked image, not the grid.
Desktop (1280x900) and phone (390x844); screenshots in ``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch
from test_ui_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _draw_stroke,
    _generate,
    _saved_with_prompt,
    _screenshot,
    _set_slider,
    _wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing")]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

BLUE = (30, 120, 200)
SIZES = [(1280, 900), (390, 844)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = launch(tmp_path_factory.mktemp("ui-img2img"), ui=True, env=TIGHT_LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def blue_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "blue.png"
    Image.new("RGB", (64, 64), BLUE).save(path)
    return path


def _img2img_page(browser: object, server: ServerProcess, width: int, height: int, tab: str) -> object:
    """The img2img tab at 64x64 in 2 steps, on the sub-tab ``tab``."""
    page = browser.new_page(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    _wait_ready(page)
    page.locator("#tabs").get_by_role("tab", name="img2img", exact=True).first.click()
    for elem_id, value in (("img2img_width", 64), ("img2img_height", 64), ("img2img_steps", 2)):
        _set_slider(page, elem_id, value)
    page.locator("#img2img_mode_tabs").get_by_role("tab", name=tab, exact=True).click()
    return page


def _upload_editor(page: object, elem_id: str, image: Path) -> None:
    """Upload into an ImageEditor and wait until it shows the picture. The editor mounts its
    canvas when its tab first opens; an upload that lands before is lost, so it waits for the
    canvas and tries again (with the file input cleared, or the same file fires no change)."""
    editor = page.locator(f"#{elem_id}")  # type: ignore[attr-defined]
    editor.get_by_text("Upload an image").wait_for()
    editor.locator("canvas").first.wait_for(state="attached")
    file_input = editor.locator("input[type=file]").first
    for attempt in range(3):
        file_input.evaluate("e => { e.value = ''; }")
        file_input.set_input_files(str(image))
        try:
            page.wait_for_function(  # type: ignore[attr-defined]
                f"!document.querySelector('#{elem_id}').innerText.includes('Upload an image')",
                timeout=TIMEOUT_MS / 6)
            return
        except sync_api.TimeoutError:
            if attempt == 2:
                raise


def _generate_img2img(page: object, prompt: str) -> str:
    page.fill("#img2img_prompt textarea", prompt)  # type: ignore[attr-defined]
    page.click("#img2img_generate")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        f"document.querySelector('#img2img_infotext textarea').value.startsWith({prompt!r} + '\\n')")
    return page.input_value("#img2img_infotext textarea")  # type: ignore[attr-defined]


def _blue_left(image: object, xs: range, ys: range) -> float:
    """Share of the pixels in the box that still have the init image's blue."""
    rgb = image.convert("RGB")  # type: ignore[attr-defined]
    pixels = [rgb.getpixel((x, y)) for x in xs for y in ys]
    return sum(all(abs(a - b) <= 12 for a, b in zip(p, BLUE, strict=True)) for p in pixels) / len(pixels)


def _no_sideways_scroll(page: object, width: int) -> None:
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_sketch_makes_an_img2img_of_the_drawing(browser: object, server: ServerProcess, blue_png: Path,
                                                 width: int, height: int) -> None:
    page = _img2img_page(browser, server, width, height, "Sketch")
    _upload_editor(page, "img2img_sketch", blue_png)
    _draw_stroke(page, page.locator("#img2img_sketch"), width=min(120, width // 3))
    prompt = f"a sketch {width}"
    infotext = _generate_img2img(page, prompt)
    assert "Denoising strength: 0.75" in infotext and "Mask blur" not in infotext  # img2img, no mask
    out = _saved_with_prompt(server.data_dir / "outputs" / "img2img-images", prompt)
    assert out.size == (64, 64)
    _no_sideways_scroll(page, width)
    _screenshot(page, f"ui-img2img-sketch-{width}.png")
    page.close()


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_inpaint_sketch_repaints_only_the_strokes(browser: object, server: ServerProcess, blue_png: Path,
                                                  width: int, height: int) -> None:
    page = _img2img_page(browser, server, width, height, "Inpaint sketch")
    _set_slider(page, "img2img_brush_size", 4)  # before the upload: the editor gets it by the time it shows
    _upload_editor(page, "img2img_inpaint_sketch", blue_png)
    _draw_stroke(page, page.locator("#img2img_inpaint_sketch"), width=min(120, width // 3))
    prompt = f"an inpaint sketch {width}"
    infotext = _generate_img2img(page, prompt)
    assert "Mask blur: 4" in infotext  # the strokes went as a mask: an inpaint
    out = _saved_with_prompt(server.data_dir / "outputs" / "img2img-images", prompt)
    # a thin stroke across the middle: the top and bottom rows keep the picture, the middle row changed
    assert _blue_left(out, range(64), range(0, 8)) == 1.0
    assert _blue_left(out, range(64), range(56, 64)) == 1.0
    assert _blue_left(out, range(26, 38), range(30, 34)) < 0.5
    _no_sideways_scroll(page, width)
    _screenshot(page, f"ui-img2img-inpaint-sketch-{width}.png")
    page.close()


def test_brush_size_reaches_the_inpaint_editor(browser: object, server: ServerProcess, blue_png: Path) -> None:
    """The same stroke repaints a thin band with a small brush and most of the picture with a big one."""
    changed = {}
    for size in (2, 40):
        page = _img2img_page(browser, server, 1280, 900, "Inpaint")
        _set_slider(page, "img2img_brush_size", size)
        _upload_editor(page, "img2img_inpaint_editor", blue_png)
        _draw_stroke(page, page.locator("#img2img_inpaint_editor"))
        prompt = f"brush size {size}"
        _generate_img2img(page, prompt)
        out = _saved_with_prompt(server.data_dir / "outputs" / "img2img-images", prompt)
        changed[size] = 1 - _blue_left(out, range(32, 33), range(64))
        page.close()
    assert changed[2] < 0.25 < 0.5 < changed[40], changed


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_inpaint_upload_uses_the_uploaded_mask(browser: object, server: ServerProcess, blue_png: Path,
                                               tmp_path: Path, width: int, height: int) -> None:
    from PIL import Image, ImageDraw

    mask = tmp_path / "mask.png"
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    image.save(mask)
    page = _img2img_page(browser, server, width, height, "Inpaint upload")
    page.locator("#img2img_inpaint_upload_image input[type=file]").set_input_files(str(blue_png))
    page.locator("#img2img_mask_upload input[type=file]").set_input_files(str(mask))
    page.wait_for_selector("#img2img_inpaint_upload_image img")
    page.wait_for_selector("#img2img_mask_upload img")
    prompt = f"an uploaded mask {width}"
    infotext = _generate_img2img(page, prompt)
    assert "Mask blur: 4" in infotext
    out = _saved_with_prompt(server.data_dir / "outputs" / "img2img-images", prompt)
    assert _blue_left(out, range(44, 64), range(64)) == 1.0  # the black half is kept
    assert _blue_left(out, range(0, 20), range(64)) < 0.5  # the white half is repainted
    _no_sideways_scroll(page, width)
    _screenshot(page, f"ui-img2img-inpaint-upload-{width}.png")
    page.close()


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_batch_writes_one_output_per_input(browser: object, server: ServerProcess, width: int,
                                           height: int) -> None:
    from PIL import Image

    src = server.data_dir / f"batch-in-{width}"
    src.mkdir()
    Image.new("RGB", (64, 64), "red").save(src / "cat.png")
    Image.new("RGB", (48, 64), "green").save(src / "dog.jpg")
    page = _img2img_page(browser, server, width, height, "Batch")
    # a folder outside the data folder is refused with a message
    page.fill("#img2img_batch_input_dir input, #img2img_batch_input_dir textarea", "/etc")
    page.fill("#img2img_batch_output_dir input, #img2img_batch_output_dir textarea", f"batch-out-{width}")
    page.click("#img2img_generate")
    page.get_by_text("outside the folders batch may use").first.wait_for()
    page.fill("#img2img_batch_input_dir input, #img2img_batch_input_dir textarea", src.name)
    page.fill("#img2img_prompt textarea", f"a batch {width}")
    page.click("#img2img_generate")
    page.wait_for_function("document.querySelector('#img2img_progress').innerText.includes('Done: 2 images')")
    out = server.data_dir / f"batch-out-{width}"
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "dog.png"]
    assert Image.open(out / "cat.png").info["parameters"].startswith(f"a batch {width}\n")
    page.wait_for_function("document.querySelectorAll('#img2img_gallery img').length >= 2")
    _no_sideways_scroll(page, width)
    _screenshot(page, f"ui-img2img-batch-{width}.png")
    page.close()


def test_resize_by_and_size_from_image(browser: object, server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (96, 64), BLUE).save(wide)
    page = _img2img_page(browser, server, 1280, 900, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(wide))
    page.wait_for_selector("#img2img_image img")
    page.click("#img2img_detect_size")  # 📐: width and height from the picture
    page.wait_for_function("document.querySelector('#img2img_width input[type=number]').value === '96'")
    assert page.input_value("#img2img_height input[type=number]") == "64"
    page.get_by_role("tab", name="Resize by").click()
    preview = "document.querySelector('#img2img_scale_resolution_preview').innerText" \
              ".includes('Resize: from 96x64 to 144x96')"
    for attempt in range(2):  # on a loaded machine a slider's change can land before the picture's
        _set_slider(page, "img2img_scale", 1.45 + attempt * 0.05)
        _set_slider(page, "img2img_scale", 1.5)
        try:
            page.wait_for_function(preview, timeout=TIMEOUT_MS / 3)
            break
        except sync_api.TimeoutError:
            _screenshot(page, "ui-img2img-resize-by-timeout.png")
            if attempt:
                raise
    infotext = _generate_img2img(page, "resized by 1.5")
    assert "Size: 144x96" in infotext
    _screenshot(page, "ui-img2img-resize-by-1280.png")
    page.close()


def test_send_to_inpaint_sends_the_picked_image_not_the_grid(browser: object, server: ServerProcess) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    _wait_ready(page)
    _set_slider(page, "txt2img_batch_size", 2)
    _generate(page, "two foxes", seed=7)
    thumbs = page.locator("#txt2img_gallery img")
    assert thumbs.count() == 3  # the grid (128x64), then the two images
    thumbs.nth(2).click()  # the second image
    page.keyboard.press("Escape")
    page.click("#txt2img_send_to_inpaint")
    page.locator("#img2img_inpaint_editor canvas").first.wait_for()
    page.wait_for_function(
        "!document.querySelector('#img2img_inpaint_editor').innerText.includes('Upload an image')")
    page.click("#img2img_detect_size")  # the size of what arrived: one 64x64 image, not the 128x64 grid
    page.wait_for_function("document.querySelector('#img2img_width input[type=number]').value === '64'")
    assert page.input_value("#img2img_height input[type=number]") == "64"
    page.close()
