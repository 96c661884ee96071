"""The History tab, Save/Zip under the gallery, the Queue tab on a phone and the status line, in
a real headless Chromium against a real ``sdcloud serve`` (demo model) with a folder store.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import csv
import time
import zipfile
from collections.abc import Iterator

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _generate, _screenshot, _wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing")]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

SMALL = {"width": 64, "height": 64, "steps": 2, "save_images": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("ui-history")
    store = tmp_path_factory.mktemp("ui-history-store")
    server = launch(data, "--store", str(store), ui=True, env=TIGHT_LIMITS)
    with server.client() as c:  # 26 images: more than one History page (24)
        for prompt, batch, n_iter, seed in (("a green apple", 4, 2, 1000), ("a green apple", 4, 2, 2000),
                                            ("a green apple", 4, 2, 3000), ("a purple grape", 1, 1, 4242),
                                            ("a green apple", 1, 1, 5000)):
            r = c.post("/sdapi/v1/txt2img", json={"prompt": prompt, "batch_size": batch, "n_iter": n_iter,
                                                  "seed": seed, **SMALL})
            assert r.status_code == 200, r.text
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


def _thumbs(page: object) -> int:
    return page.locator("#history_gallery .thumbnail-item img").count()  # type: ignore[attr-defined]


def _wait_thumbs(page: object, n: int) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        f"document.querySelectorAll('#history_gallery .thumbnail-item img').length === {n}")


def test_history_tab_pages_searches_and_sends_to_other_tabs(browser: object, server: ServerProcess) -> None:
    page = _open(browser, server, 1280, 900)
    page.get_by_role("tab", name="History").click()
    _wait_thumbs(page, 24)  # the newest day, one page of 24
    info = page.inner_text("#history_page_info")
    assert "Page 1 of 2 · 1–24 of 26" in info
    page.click("#history_next")
    _wait_thumbs(page, 2)
    assert "Page 2 of 2" in page.inner_text("#history_page_info")
    assert page.locator("#history_next").is_disabled()
    page.click("#history_prev")
    _wait_thumbs(page, 24)

    # search by prompt: one image matches
    page.fill("#history_search input, #history_search textarea", "grape")
    page.click("#history_search_button")
    _wait_thumbs(page, 1)
    page.locator("#history_gallery .thumbnail-item").first.click()
    page.wait_for_function("document.querySelector('#history_infotext textarea').value.startsWith('a purple grape')")
    infotext = page.input_value("#history_infotext textarea")
    assert "Seed: 4242" in infotext and "CFG scale: 7," in infotext  # A1111's number style
    _screenshot(page, "ui-history-desktop.png")

    # Send to txt2img: the image's parameters fill the form
    page.get_by_role("tab", name="txt2img").first.click()
    page.fill("#txt2img_prompt textarea", "something else")
    page.get_by_role("tab", name="History").click()
    page.click("#history_send_to_txt2img")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === 'a purple grape'")
    assert page.input_value("#txt2img_seed input") == "4242"
    assert page.input_value("#txt2img_steps input[type=number]") == "2"

    # Send to img2img: the image and its prompt
    page.get_by_role("tab", name="History").click()
    page.click("#history_send_to_img2img")
    page.wait_for_selector("#img2img_image img")
    assert page.input_value("#img2img_prompt textarea") == "a purple grape"

    # Send to extras: the image
    page.get_by_role("tab", name="History").click()
    page.click("#history_send_to_extras")
    page.wait_for_selector("#extras_image img")
    page.close()


def test_history_tab_on_a_phone(browser: object, server: ServerProcess) -> None:
    page = _open(browser, server, 390, 844)
    page.get_by_role("tab", name="History").click()
    _wait_thumbs(page, 24)
    page.locator("#history_gallery .thumbnail-item").nth(1).click()
    page.wait_for_function("document.querySelector('#history_infotext textarea').value.includes('Steps: 2')")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for elem in ("history_gallery", "history_infotext", "history_send_to_txt2img", "history_send_to_extras",
                 "history_next"):  # all of it on the screen, nothing cut off at the right
        box = page.locator(f"#{elem}").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (elem, box)
    _screenshot(page, "ui-history-phone.png")
    page.click("#history_send_to_inpaint")  # the picked image goes to the inpaint editor
    page.wait_for_function("(e => e && e.querySelector('canvas') && !e.innerText.includes('Upload an image'))"
                           "(document.querySelector('#img2img_inpaint_editor'))")
    assert page.input_value("#img2img_prompt textarea") == "a purple grape"  # the second newest image
    page.close()


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_save_and_zip_under_the_gallery(browser: object, server: ServerProcess, width: int, height: int) -> None:
    save = server.data_dir / "outputs" / "save"
    before = {p.name for p in save.glob("*")} if save.is_dir() else set()
    page = _open(browser, server, width, height)
    seed = 700 + width
    _generate(page, f"a saved lemon {width}", seed=seed)
    page.click("#save_txt2img")
    page.wait_for_function("document.querySelector('#html_log_txt2img').innerText.includes('Saved:')")
    new = sorted({p.name for p in save.glob("*.png")} - before)
    assert len(new) == 1 and new[0].endswith(f"-{seed}.png"), new
    assert new[0] in page.inner_text("#html_log_txt2img")
    page.wait_for_selector("#download_files_txt2img a")  # the saved file, to download
    copy = save / new[0]
    original = next((server.data_dir / "outputs" / "txt2img-images").rglob(f"*-{seed}.png"))
    assert copy.read_bytes() == original.read_bytes()  # infotext kept
    with open(save / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["prompt", "seed", "width"]
    assert [f"a saved lemon {width}", str(seed), "64", "64"] == rows[-1][:4] and rows[-1][7] == new[0]

    page.click("#save_zip_txt2img")
    page.wait_for_function("document.querySelector('#html_log_txt2img').innerText.includes('Zip:')")
    zips = sorted(set(save.glob("*.zip")) - {save / n for n in before}, key=lambda p: p.stat().st_mtime)
    assert zips, "no zip was written"
    with zipfile.ZipFile(zips[-1]) as zf:
        assert zf.namelist() == [original.name] and zf.read(original.name) == original.read_bytes()
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    _screenshot(page, f"ui-save-zip-{width}.png")
    page.close()


def test_queue_table_reads_on_a_phone(browser: object, server: ServerProcess) -> None:
    with server.client() as client:  # a long job running, one waiting behind it
        running = client.post("/api/txt2img", json={"prompt": "long", "width": 256, "height": 256,
                                                    "steps": 40, "batch_size": 4, "n_iter": 2}).json()["id"]
        waiting = client.post("/api/txt2img", json={"prompt": "waiting", "width": 64, "height": 64,
                                                    "steps": 2}).json()["id"]
    try:
        for width, height in ((390, 844), (1280, 900)):
            page = _open(browser, server, width, height)
            page.get_by_role("tab", name="Queue").click()
            page.wait_for_function(f"document.querySelector('#queue_table').innerText.includes('{waiting}')")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            header_shown = page.evaluate("getComputedStyle(document.querySelector('#queue_table thead')).display")
            row = page.locator("#queue_table tr", has_text=waiting).bounding_box()
            assert row is not None and row["x"] >= 0 and row["x"] + row["width"] <= width
            if width < 500:  # one card per job: every value under its own name, nothing sideways
                assert header_shown == "none"
                labels = page.locator("#queue_table tr", has_text=waiting).evaluate(
                    "tr => [...tr.querySelectorAll('td')].map(td => "
                    "getComputedStyle(td, '::before').content + td.innerText)")
                assert '"State: "Queued' in labels and '"Kind: "txt2img' in labels, labels
            else:
                assert header_shown != "none"
            _screenshot(page, f"ui-queue-{width}.png")
            page.close()
    finally:
        with server.client() as client:
            client.post(f"/api/queue/{waiting}/cancel")
            client.post(f"/api/queue/{running}/cancel")


def test_status_line_is_fresh_when_the_page_loads(browser: object, server: ServerProcess) -> None:
    """The line under the model bar says what the store holds now, not when the server built the
    page: its first text already counts the images uploaded since start-up (well before its
    10-second refresh)."""
    with server.client() as client:
        deadline = time.monotonic() + 60
        while (st := client.get("/api/storage").json())["uploaded"] < 26 or st["pending"]:
            assert time.monotonic() < deadline, "the images did not reach the store"
            time.sleep(0.2)
        uploaded = st["uploaded"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    started = time.monotonic()
    page.goto(server.url + "/")
    page.wait_for_function(f"document.querySelector('#session_status') && document.querySelector("
                           f"'#session_status').innerText.includes('{uploaded} uploaded')", timeout=9_000)
    assert time.monotonic() - started < 9.5
    page.close()
