"""The Merge tab and the session/storage status line in a real headless Chromium against a real
``sdcloud serve`` with a folder store and a price per hour (Debian's chromium via Playwright;
skips, saying why, where it is missing). Screenshot in ``test-artifacts/``."""

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


def test_merge_tab_merges_and_status_line_shows_session_and_store(tmp_path):
    data = tmp_path / "data"
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_demo_checkpoint(folder / "one.safetensors", "sd15", seed=1)
    write_demo_checkpoint(folder / "two.safetensors", "sd15", seed=2)
    store = tmp_path / "volume"
    store.mkdir()
    server = launch(data, "--store", str(store), "--price-per-hour", "1.2", "--max-hours", "6",
                    ui=True, env=TIGHT_LIMITS)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(server.url + "/")
            page.wait_for_function("document.body.dataset.sdcloudReady === '1'")
            status = page.inner_text("#session_status")
            assert "Session 0:0" in status and "USD at 1.2/h" in status
            assert "max-hours 6 in" in status and "volume: 0 pending" in status
            page.get_by_role("tab", name="Merge").click()
            for elem_id, value in (("merge_a", "one.safetensors"), ("merge_b", "two.safetensors")):
                page.click(f"#{elem_id} input")
                page.locator(f"#{elem_id} [role=option]", has_text=value).click()
            page.fill("#merge_output textarea", "from-ui")
            page.click("#merge_run")
            page.wait_for_function(
                "document.querySelector('#merge_status').innerText.includes('Done:')")
            done = page.inner_text("#merge_status")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "merge-tab.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert "from-ui.safetensors" in done
    assert (folder / "from-ui.safetensors").is_file()
