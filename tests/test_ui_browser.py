"""The web UI in a real headless Chromium against a real ``sdcloud serve`` (demo model).

Chromium is Debian's (/usr/bin/chromium, installed by scripts/test.sh), driven by Playwright;
the test skips, saying why, where it is missing. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 180_000  # generous: the CPU may be shared with other test runs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (scripts/test.sh installs it)",
)]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def _write_lora(folder: Path, name: str) -> None:
    """A LoRA file for the picker (the picker lists names; nothing loads it in these tests)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 8), np.float32)},
              str(folder / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("ui-server")
    _write_lora(data / "models" / "Lora", "detail_tweaker")
    server = launch(data, ui=True, env=TIGHT_LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser: object, server: ServerProcess, width: int, height: int) -> object:
    page = browser.new_page(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    _wait_ready(page)
    return page


def _wait_ready(page: object) -> None:
    """Until the page-load refresh of lists and settings is done (the UI marks it), so a test's
    input is not overwritten by it."""
    page.wait_for_function("document.body.dataset.sdcloudReady === '1'")  # type: ignore[attr-defined]


def _set_slider(page: object, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")  # type: ignore[attr-defined]
    box.fill(str(value))
    box.press("Enter")


def _generate(page: object, prompt: str, seed: int, hires: bool = False) -> str:
    """Fill the txt2img form (64x64, 4 steps; with ``hires``, hires fix x2 in 2 steps), press
    Generate, wait for the gallery; return the infotext shown under it."""
    page.fill("#txt2img_prompt textarea", prompt)  # type: ignore[attr-defined]
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 4)):
        _set_slider(page, elem_id, value)
    page.fill("#txt2img_seed input", str(seed))  # type: ignore[attr-defined]
    if hires:
        page.get_by_text("Hires. fix").click()  # type: ignore[attr-defined]
        page.check("#txt2img_enable_hr input")  # type: ignore[attr-defined]
        _set_slider(page, "txt2img_hr_steps", 2)
    page.click("#txt2img_generate")  # type: ignore[attr-defined]
    page.wait_for_selector("#txt2img_gallery img")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "document.querySelector('#txt2img_infotext textarea').value.includes('Steps:')")
    return page.input_value("#txt2img_infotext textarea")  # type: ignore[attr-defined]


def _upload_to_editor(page: object, editor: object, image: Path) -> None:
    """Upload into the ImageEditor and wait until it shows the image (its "Upload an image"
    placeholder is gone). The editor mounts when its tab first opens; an upload that lands
    while it mounts is lost, so it is tried again once."""
    editor.get_by_text("Upload an image").wait_for()  # type: ignore[attr-defined]
    editor.locator("canvas").first.wait_for(state="attached")  # type: ignore[attr-defined]
    file_input = editor.locator("input[type=file]").first  # type: ignore[attr-defined]
    for attempt in range(2):
        file_input.evaluate("e => { e.value = ''; }")  # the same file again fires no change otherwise
        file_input.set_input_files(str(image))
        try:
            page.wait_for_function(  # type: ignore[attr-defined]
                "!document.querySelector('#img2img_inpaint_editor').innerText.includes('Upload an image')",
                timeout=TIMEOUT_MS / 4)
            return
        except sync_api.TimeoutError:
            if attempt:
                raise


def _draw_stroke(page: object, editor: object, width: int = 120) -> None:
    """Drag the brush ``width`` pixels across the middle of the editor's canvas. The canvas is
    scrolled into view first: mouse events outside the viewport draw nothing (with the styles
    and extra-networks rows above it, the editor starts below the fold at 1280x900)."""
    canvas = editor.locator("canvas").first  # type: ignore[attr-defined]
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - width / 2, y)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    for i in range(13):
        page.mouse.move(x - width / 2 + i * width / 12, y + (i % 2) * 4)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]


def _image_size(page: object, selector: str) -> list[int]:
    """Natural size of the first image matching ``selector``, once it has loaded."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector)
    return page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]")  # type: ignore


def _saved_with_prompt(folder: Path, prompt: str) -> object:
    """The saved PNG whose infotext starts with ``prompt``."""
    from PIL import Image

    for path in sorted(folder.rglob("*.png")):
        image = Image.open(path)
        if image.info.get("parameters", "").startswith(prompt + "\n"):
            return image
    raise AssertionError(f"no image for {prompt!r} in {folder}")


def _screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def test_txt2img_generates_and_shows_image_with_infotext(browser: object, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, 1280, 900)
    infotext = _generate(page, "a red fox in the snow", seed=1234)

    assert infotext.startswith("a red fox in the snow\n")
    for part in ("Steps: 4", "Seed: 1234", "Size: 64x64", "Model: demo"):
        assert part in infotext
    assert "Done" in page.inner_text("#txt2img_progress")
    assert _image_size(page, "#txt2img_gallery img") == [64, 64]
    # the file the gallery shows is the saved PNG, infotext included
    saved = sorted((ui_server.data_dir / "outputs" / "txt2img-images").rglob("*-1234.png"))
    assert saved, "the image was not saved under outputs/txt2img-images"
    assert _screenshot(page, "ui-txt2img-desktop.png").stat().st_size > 10_000

    # Reuse puts the seed of the selected image back; Random sets -1
    page.fill("#txt2img_seed input", "-1")
    page.click("#txt2img_reuse_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '1234'")
    page.click("#txt2img_random_seed")
    page.wait_for_function("document.querySelector('#txt2img_seed input').value === '-1'")

    # the finished job is in the Queue tab
    page.get_by_role("tab", name="Queue").click()
    page.wait_for_function("document.querySelector('#queue_table') &&"
                           " document.querySelector('#queue_table').innerText.includes('Done')")
    page.close()


def test_phone_sized_screen(browser: object, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, 390, 844)
    infotext = _generate(page, "a lighthouse at dusk", seed=77)
    assert "Seed: 77" in infotext
    # nothing wider than the phone: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#txt2img_generate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    # results come right after the prompt and Generate, above the parameters
    gallery = page.locator("#txt2img_gallery").bounding_box()
    steps = page.locator("#txt2img_steps").bounding_box()
    prompt = page.locator("#txt2img_prompt").bounding_box()
    assert gallery is not None and steps is not None and prompt is not None
    assert gallery["y"] < steps["y"]
    assert gallery["width"] >= 0.9 * prompt["width"]  # the image uses the screen's width
    _screenshot(page, "ui-txt2img-phone.png")
    page.close()


def test_lora_picker_inserts_tag(browser: object, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, 1280, 900)
    page.fill("#txt2img_prompt textarea", "a castle")
    page.click("#txt2img_lora input")
    page.get_by_role("option", name="detail_tweaker").click()
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a castle, <lora:detail_tweaker:1>'")
    page.close()


def test_png_info_sends_parameters_to_txt2img(browser: object, ui_server: ServerProcess,
                                              tmp_path: Path) -> None:
    page = _open(browser, ui_server, 1280, 900)
    infotext = _generate(page, "a blue bicycle, studio light", seed=4242, hires=True)
    assert "Hires upscale: 2" in infotext and "Hires steps: 2" in infotext and "Size: 64x64" in infotext
    assert _image_size(page, "#txt2img_gallery img") == [128, 128]  # hires doubled the 64x64 first pass
    saved = sorted((ui_server.data_dir / "outputs" / "txt2img-images").rglob("*-4242.png"))[-1]
    upload = tmp_path / "dropped.png"
    shutil.copy(saved, upload)
    # start from a different form, then let PNG Info fill it back
    page.fill("#txt2img_prompt textarea", "something else")
    _set_slider(page, "txt2img_steps", 7)
    page.fill("#txt2img_seed input", "-1")
    page.uncheck("#txt2img_enable_hr input")
    _set_slider(page, "txt2img_hr_steps", 0)

    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(upload))
    page.wait_for_function("document.querySelector('#pnginfo_text textarea').value.includes('Seed: 4242')")
    assert page.input_value("#pnginfo_text textarea") == infotext
    page.click("#pnginfo_send_to_txt2img")

    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a blue bicycle, studio light'")
    assert page.input_value("#txt2img_seed input") == "4242"
    assert page.input_value("#txt2img_steps input[type=number]") == "4"
    assert page.input_value("#txt2img_width input[type=number]") == "64"
    assert page.is_checked("#txt2img_enable_hr input")
    assert page.input_value("#txt2img_hr_steps input[type=number]") == "2"
    assert re.search(r"txt2img", page.locator("[role=tab][aria-selected=true]").first.inner_text())
    page.close()


def _watch(page: object) -> None:
    """Record every text the progress bar shows and whether a live preview appeared, however
    briefly (the states may last less than a polling test could see)."""
    page.evaluate("""() => {
        window.__seen = {texts: [], previews: 0};
        new MutationObserver(() => {
            const bar = document.querySelector('#txt2img_progress');
            if (bar && bar.innerText) window.__seen.texts.push(bar.innerText);
            if (document.querySelector('#txt2img_preview img')) window.__seen.previews += 1;
        }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    }""")  # type: ignore[attr-defined]


def test_live_progress_with_queue_position_and_preview(browser: object, ui_server: ServerProcess) -> None:
    import threading

    page = _open(browser, ui_server, 1280, 900)
    # Settings tab: live preview after every step (the same store as POST /sdapi/v1/options)
    page.get_by_role("tab", name="Settings").click()
    box = page.locator("#setting_show_progress_every_n_steps input")
    box.fill("1")
    box.press("Enter")
    page.click("#settings_apply")
    page.wait_for_function("document.querySelector('#settings_status').innerText"
                           ".includes('Applied: Live preview display period (sampling steps)')")
    with ui_server.client() as client:
        assert client.get("/sdapi/v1/options").json()["show_progress_every_n_steps"] == 1

    page.get_by_role("tab", name="txt2img").click()
    page.fill("#txt2img_prompt textarea", "a tall tree")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 16)):
        _set_slider(page, elem_id, value)
    _watch(page)
    # an API client's job runs first, so the UI's job waits in the queue behind it
    api_job = threading.Thread(target=lambda: ui_server.client().post(
        "/sdapi/v1/txt2img", json={"prompt": "busy", "width": 64, "height": 64, "steps": 16}))
    api_job.start()
    with ui_server.client() as client:
        while client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0:
            time.sleep(0.02)
    page.locator("#txt2img_prompt textarea").press("Control+Enter")  # A1111's shortcut for Generate
    page.wait_for_selector("#txt2img_gallery img")
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('Done')")
    api_job.join(60)

    seen = page.evaluate("window.__seen")
    assert any(t.startswith("Queued (#1 in line)") for t in seen["texts"]), seen["texts"]
    assert any(re.match(r"Step \d+/16 · \d+%", t) for t in seen["texts"]), seen["texts"]
    assert seen["previews"] > 0, "no live preview was shown while the job ran"
    assert not page.locator("#txt2img_preview img").is_visible()  # the preview gives way to the gallery
    page.close()


def test_interrupt_stops_the_running_job(browser: object, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, 1280, 900)
    page.fill("#txt2img_prompt textarea", "a slow mountain")
    for elem_id, value in (("txt2img_width", 256), ("txt2img_height", 256), ("txt2img_steps", 40)):
        _set_slider(page, elem_id, value)
    page.click("#txt2img_generate")
    page.wait_for_function("/Step \\d+\\/40/.test(document.querySelector('#txt2img_progress').innerText)")
    page.click("#txt2img_interrupt")
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('Interrupted')")
    with ui_server.client() as client:
        jobs = client.get("/api/queue").json()["jobs"]
    mine = [j for j in jobs if j["result"] and j["result"]["info"].get("prompt") == "a slow mountain"]
    assert [(j["state"], j["error"]) for j in mine] == [("cancelled", "cancelled while running")]
    page.close()


def test_send_to_img2img_then_inpaint(browser: object, ui_server: ServerProcess, tmp_path: Path) -> None:
    from PIL import Image

    page = _open(browser, ui_server, 1280, 900)
    _generate(page, "a red ball", seed=99)
    page.click("#txt2img_send_to_img2img")
    page.wait_for_selector("#img2img_image img")  # the txt2img image is the init image now
    assert page.input_value("#img2img_prompt textarea") == "a red ball"
    for elem_id, value in (("img2img_width", 64), ("img2img_height", 64), ("img2img_steps", 4)):
        _set_slider(page, elem_id, value)
    page.click("#img2img_generate")
    page.wait_for_function("document.querySelector('#img2img_infotext textarea').value.includes('Steps:')")
    infotext = page.input_value("#img2img_infotext textarea")
    assert infotext.startswith("a red ball\n")
    assert "Denoising strength: 0.75" in infotext and "Mask blur" not in infotext

    # Inpaint: upload an image and paint a stroke over it with the (white) brush
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(init)
    page.get_by_role("tab", name="Inpaint", exact=True).click()
    editor = page.locator("#img2img_inpaint_editor")
    _upload_to_editor(page, editor, init)
    _draw_stroke(page, editor)
    page.fill("#img2img_prompt textarea", "a red ball, inpainted")
    page.click("#img2img_generate")
    page.wait_for_function(
        "document.querySelector('#img2img_infotext textarea').value.startsWith('a red ball, inpainted')")
    infotext = page.input_value("#img2img_infotext textarea")
    assert "Mask blur: 4" in infotext  # a mask went with the request: the job was an inpaint
    # only the painted middle was repainted: the corners keep the init image's blue
    out = _saved_with_prompt(ui_server.data_dir / "outputs" / "img2img-images", "a red ball, inpainted")
    pixels = out.convert("RGB")
    corner = pixels.getpixel((1, 1))
    assert all(abs(a - b) <= 12 for a, b in zip(corner, (30, 120, 200), strict=True)), corner
    middle = [pixels.getpixel((x, y)) for x in range(24, 40) for y in range(24, 40)]
    assert sum(abs(p[0] - 30) + abs(p[1] - 120) + abs(p[2] - 200) for p in middle) / len(middle) > 30
    _screenshot(page, "ui-inpaint-desktop.png")
    page.close()


def test_ui_behind_auth(browser: object, start_server: object) -> None:
    """With --auth the UI asks for the password like the API does, and works once given."""
    server = start_server("--auth", "painter:s3cret-Pass", ui=True, auth=("painter", "s3cret-Pass"),
                          env=TIGHT_LIMITS)  # type: ignore[operator]
    anonymous = browser.new_page()  # type: ignore[attr-defined]
    with pytest.raises(sync_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):  # 401, no password to give
        anonymous.goto(server.url + "/")
    anonymous.close()

    context = browser.new_context(  # type: ignore[attr-defined]
        http_credentials={"username": "painter", "password": "s3cret-Pass"}, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    _wait_ready(page)
    infotext = _generate(page, "a locked door", seed=5)
    assert "Seed: 5" in infotext
    assert _image_size(page, "#txt2img_gallery img") == [64, 64]
    context.close()


def test_model_picker_switches_the_model(browser: object, ui_server: ServerProcess) -> None:
    page = _open(browser, ui_server, 1280, 900)
    try:
        page.click("#sd_model_checkpoint input")
        page.get_by_role("option", name="demo-xl").click()
        page.wait_for_function("document.querySelector('#model_status').innerText.includes('Loaded demo-xl')")
        with ui_server.client() as client:  # the same switch A1111 clients see
            assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "demo-xl"
        infotext = _generate(page, "a small boat", seed=3)
        assert "Model: demo-xl" in infotext
    finally:
        with ui_server.client() as client:
            client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "demo"})
    page.close()


def test_queue_tab_cancels_a_waiting_job(browser: object, ui_server: ServerProcess) -> None:
    with ui_server.client() as client:  # two API jobs: a long one running, one waiting behind it
        running = client.post("/api/txt2img", json={"prompt": "long", "width": 256, "height": 256,
                                                    "steps": 40, "batch_size": 4, "n_iter": 2}).json()["id"]
        waiting = client.post("/api/txt2img", json={"prompt": "waiting", "width": 64, "height": 64,
                                                    "steps": 4}).json()["id"]
    page = _open(browser, ui_server, 1280, 900)
    try:
        page.get_by_role("tab", name="Queue").click()
        page.wait_for_function(f"document.querySelector('#queue_table').innerText.includes('{waiting}')")
        page.click("#queue_job input")
        page.get_by_role("option", name=waiting).click()
        page.click("#queue_cancel")
        page.wait_for_function("document.querySelector('#queue_table').innerText.includes('cancelled while queued')")
        with ui_server.client() as client:
            assert client.get(f"/api/queue/{waiting}").json()["state"] == "cancelled"
    finally:
        with ui_server.client() as client:
            client.post(f"/api/queue/{running}/cancel")
    page.close()


def _open_in(browser: object, server: ServerProcess, locale: str, query: str = "") -> object:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, locale=locale)  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/" + query)
    _wait_ready(page)
    return page


def test_japanese_ui_follows_the_browser_and_generates(browser: object, ui_server: ServerProcess) -> None:
    """A browser set to Japanese gets the Japanese UI, in the community's words; generating
    works the same. The screenshot is the proof a reviewer looks at."""
    page = _open_in(browser, ui_server, "ja-JP")
    page.get_by_role("tab", name="設定").wait_for()
    text = page.inner_text("body")
    for word in ("プロンプト", "ネガティブプロンプト", "サンプラー", "ステップ数", "CFGスケール", "シード",
                 "ハイレゾ補助 (Hires. fix)", "生成", "マージ", "Stable Diffusion チェックポイント"):
        assert word in text, word
    assert "Sampling steps" not in text and "Negative prompt" not in text
    infotext = _generate(page, "桜の木の下の猫", seed=4321)  # by element ids: the same in any language
    assert infotext.startswith("桜の木の下の猫\n") and "Seed: 4321" in infotext
    assert _screenshot(page, "ui-txt2img-ja.png").stat().st_size > 10_000
    page.close()


def _english_leftovers(text: str) -> list[str]:
    """Lines of the page that are an English UI string whose Japanese differs: text the
    Japanese page should not show."""
    from sdcloud.ui.i18n import JA

    return sorted({line.strip() for line in text.splitlines() if JA.get(line.strip(), line.strip()) != line.strip()})


def test_japanese_ui_new_tabs_have_no_english_left(browser: object, ui_server: ServerProcess) -> None:
    """The Script dropdown, the ControlNet panel, Extras, Train and the Workers panel in a
    Japanese browser: labels and choices in Japanese, no line of the page an English UI string.
    The screenshots are what a reviewer looks at."""
    page = _open_in(browser, ui_server, "ja-JP")
    page.click("#txt2img_script input")
    page.get_by_role("option", name="X/Y/Z プロット").click()  # the name shown; the value stays English
    page.locator("#txt2img_xyz_X_type").wait_for(state="visible")
    assert page.input_value("#txt2img_xyz_X_type input") == "シード"
    page.locator("#txt2img_controlnet").get_by_text("ControlNet").first.click()
    page.locator("#txt2img_controlnet_control_mode").wait_for(state="visible")
    page.locator("#txt2img_extra_networks").get_by_text("追加ネットワーク").first.click()
    page.locator("#txt2img_styles_save_box").get_by_text("プロンプトをスタイルとして保存").click()
    body = page.inner_text("body")
    for word in ("スクリプト", "X軸の種類", "凡例を描画", "プリプロセッサー", "コントロールモード",
                 "バランス (Balanced)", "リサイズのみ", "スタイル", "チェックポイント", "挿入時の重み", "スキップ"):
        assert word in body, word
    assert _english_leftovers(body) == []
    _screenshot(page, "ui-txt2img-script-controlnet-ja.png")
    tabs = (("img2img", ("DeepBooru で解析", "リサイズのみ", "インペイントの設定"), "ui-img2img-ja.png"),
            ("その他 (Extras)", ("アップスケーラー 1", "顔の修復", "倍率で指定"), "ui-extras-ja.png"),
            ("学習", ("データセット", "学習率", "オプティマイザー", "メモリープリセット"), "ui-train-ja.png"),
            ("キュー", ("ワーカー", "単体モード", "状態", "完了したジョブ"), "ui-queue-workers-ja.png"),
            ("マージ", ("加重和 (Weighted sum)", "A の VAE を焼き込む"), "ui-merge-ja.png"))
    for tab, words, shot in tabs:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.get_by_text(words[0]).first.wait_for()
        text = page.inner_text("body")
        for word in words:
            assert word in text, (tab, word)
        assert _english_leftovers(text) == [], tab
        _screenshot(page, shot)
    page.close()


def test_language_switch_in_settings_is_kept(browser: object, ui_server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(ui_server.url + "/")
    _wait_ready(page)
    page.get_by_role("tab", name="設定").click()
    _screenshot(page, "ui-settings-ja.png")
    with page.expect_navigation():
        page.get_by_label("English").click()  # the page reloads at once
    _wait_ready(page)
    page.get_by_role("tab", name="Settings").wait_for()  # English now, although the browser says Japanese
    assert "Sampling steps" in page.inner_text("body")
    page.reload()
    _wait_ready(page)
    page.get_by_role("tab", name="Settings").click()  # the choice is kept
    assert page.locator("#setting_ui_language input[value=en]").is_checked()
    page.goto(ui_server.url + "/?lang=ja")  # a link can pick the language too
    _wait_ready(page)
    page.get_by_role("tab", name="設定").wait_for()
    page.goto(ui_server.url + "/?lang=auto")
    _wait_ready(page)
    context.close()
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_xyz_plot_from_the_script_dropdown(browser: object, ui_server: ServerProcess, width: int,
                                           height: int) -> None:
    page = _open(browser, ui_server, width, height)
    page.click("#txt2img_script input")
    page.get_by_role("option", name="X/Y/Z plot").click()
    page.locator("#txt2img_xyz_X_type").wait_for(state="visible")
    page.click("#txt2img_xyz_X_type input")
    page.get_by_role("option", name="Steps", exact=True).click()
    page.fill("#txt2img_xyz_X_values textarea, #txt2img_xyz_X_values input", "1, 2")
    infotext = _generate(page, f"xyz plot {width}", seed=99)
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: \"1, 2\"" in infotext
    grid_w, grid_h = _image_size(page, "#txt2img_gallery img")
    assert grid_w == 128 and grid_h > 64  # two 64px cells side by side under a row of "Steps: N" labels
    grids = list((ui_server.data_dir / "outputs" / "txt2img-grids").rglob("xyz_grid-*.png"))
    assert grids, "the X/Y/Z grid was not saved under outputs/txt2img-grids"
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    _screenshot(page, f"ui-xyz-plot-{width}.png")
    page.close()


def test_styles_save_apply_and_use(browser: object, ui_server: ServerProcess) -> None:
    """Save the prompts as a style (written to styles.csv in A1111's format), pick it for a
    generation (listed in the API), and Apply it into the prompt boxes."""
    page = _open(browser, ui_server, 1280, 900)
    page.fill("#txt2img_prompt textarea", "{prompt}, golden hour")
    page.fill("#txt2img_neg_prompt textarea", "lowres")
    page.get_by_text("Save prompts as a style").click()
    page.fill("#txt2img_style_name input, #txt2img_style_name textarea", "golden")
    page.click("#txt2img_style_save")
    styles_csv = ui_server.data_dir / "styles.csv"
    deadline = time.monotonic() + 60
    while not (styles_csv.exists() and "golden" in styles_csv.read_text()):
        assert time.monotonic() < deadline, "styles.csv was not written"
        time.sleep(0.2)
    assert styles_csv.read_text().splitlines()[0] == "name,prompt,negative_prompt"
    page.fill("#txt2img_prompt textarea", "a harbour")
    page.fill("#txt2img_neg_prompt textarea", "")
    # A1111's token counter under the prompt box
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() === '2/75'")
    page.click("#txt2img_styles input")
    page.get_by_role("option", name="golden").click()
    page.keyboard.press("Escape")
    infotext = _generate(page, "a harbour", seed=5)
    assert infotext.startswith("a harbour, golden hour\nNegative prompt: lowres\n")
    _screenshot(page, "ui-styles-desktop.png")
    page.click("#txt2img_styles_apply")  # the style is still selected: Apply writes it into the boxes
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a harbour, golden hour'")
    assert page.input_value("#txt2img_neg_prompt textarea") == "lowres"
    page.close()


def test_extra_network_cards_insert_lora(browser: object, ui_server: ServerProcess) -> None:
    """Open Extra networks, find the LoRA card by search, click it: the tag goes into the prompt
    with the weight from the slider."""
    page = _open(browser, ui_server, 390, 844)
    page.fill("#txt2img_prompt textarea", "a castle")
    page.get_by_text("Extra networks").first.click()
    _set_slider(page, "txt2img_en_weight", 0.6)
    page.fill("#txt2img_en_search input, #txt2img_en_search textarea", "detail")
    card = page.locator("#txt2img_en_cards button img").first
    card.wait_for()
    assert page.locator("#txt2img_en_cards button img").count() == 1
    card.click()
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea').value === 'a castle, <lora:detail_tweaker:0.6>'")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _screenshot(page, "ui-extra-networks-phone.png")
    page.close()
