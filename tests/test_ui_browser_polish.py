"""Issue 17 part 8 in a real headless Chromium at phone size (390x844) against a real
``sdcloud serve`` with two demo checkpoints: the Merge tab shows words (not the API's names)
and the progress bar every long action shows; the Queue tab shows the merge as cards with the
same bar; the session line is there from the first paint. Screenshots in ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TIGHT_LIMITS, launch
from sdcloud.engine.demo import write_demo_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (scripts/test.sh installs it)",
)]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def test_phone_merge_and_queue_show_words_and_one_progress_bar(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_demo_checkpoint(folder / "one.safetensors", "sd15", seed=1)
    write_demo_checkpoint(folder / "two.safetensors", "sd15", seed=2)
    server = launch(data, "--price-per-hour", "1.2", ui=True, env=TIGHT_LIMITS)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(180_000)
            page.goto(server.url + "/")
            page.wait_for_function("document.body.dataset.sdcloudReady === '1'")
            assert "Session 0:0" in page.inner_text("#session_status")  # filled at load

            page.get_by_role("tab", name="Merge").click()
            merge = page.locator("#merge_method")
            merge.get_by_text("Weighted sum").wait_for()
            text = page.inner_text("body")
            for word in ("Weighted sum", "Add difference", "Bake in A's VAE", "Merge the VAEs"):
                assert word in text, word
            for name in ("weighted_sum", "add_difference", "train_difference"):
                assert name not in text, name
            merge.get_by_text("Add difference").click()  # a word picked, the API's name sent:
            merge.get_by_text("Weighted sum").click()    # the merge below is a weighted sum
            for elem_id, value in (("merge_a", "one.safetensors"), ("merge_b", "two.safetensors")):
                page.click(f"#{elem_id} input")
                page.locator(f"#{elem_id} [role=option]", has_text=value).click()
            page.fill("#merge_output textarea", "phone-merge")
            page.click("#merge_run")
            page.locator("#merge_status .sd-progress").wait_for()  # the bar, from the first answer on
            page.wait_for_function(
                "document.querySelector('#merge_status .sd-progress-text').innerText.includes('Done:')")
            assert page.locator("#merge_status .sd-progress.sd-done").count() == 1
            assert "phone-merge.safetensors" in page.inner_text("#merge_status")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "ui-merge-progress-phone.png"), full_page=True)

            page.get_by_role("tab", name="Queue").click()
            page.wait_for_function("document.querySelector('#queue_table .sd-progress') !== null")
            row = page.locator("#queue_table tbody tr").first
            cells = {c.get_attribute("data-label"): c for c in row.locator("td").all()}
            assert cells["Kind"].inner_text() == "Merge" and cells["State"].inner_text() == "Done"
            assert cells["Progress"].locator(".sd-progress.sd-done").count() == 1
            # a card per job on a phone: the header's name before each value, nothing sideways
            assert page.locator("#queue_table thead").is_hidden()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "ui-queue-progress-phone.png"), full_page=True)

            page.get_by_role("tab", name="Train").click()
            assert page.input_value("#train_scheduler input") == "Constant"  # not "constant"
            browser.close()
    finally:
        server.stop()
    assert (folder / "phone-merge.safetensors").is_file()
