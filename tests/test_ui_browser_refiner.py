"""The Refiner accordion and the hires pass's own controls in a real headless Chromium against a
real ``sdcloud serve`` (SDXL demo model and a tiny SDXL refiner file), at desktop and phone
sizes; screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import TIGHT_LIMITS, ServerProcess, launch
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, _generate, _open, _screenshot, _set_slider, sync_api

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (scripts/test.sh installs it)",
)]


@pytest.fixture(scope="module")
def xl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from sdcloud.engine.demo import write_demo_checkpoint

    data = tmp_path_factory.mktemp("ui-refiner")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    write_demo_checkpoint(ckpts / "tiny-refiner.safetensors", "sdxl-refiner", seed=5)
    server = launch(data, ui=True, model="demo-xl", env=TIGHT_LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _pick(page: object, elem_id: str, option: str, exact: bool = True) -> None:
    page.click(f"#{elem_id} input")  # type: ignore[attr-defined]
    page.get_by_role("option", name=option, exact=exact).first.click()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_refiner_and_hires_controls_reach_the_image(browser: object, xl_server: ServerProcess, width: int,
                                                    height: int) -> None:
    page = _open(browser, xl_server, width, height)
    page.get_by_text("Refiner", exact=True).first.click()  # type: ignore[attr-defined]
    _pick(page, "txt2img_refiner_checkpoint", "tiny-refiner", exact=False)  # its title has the hash
    _set_slider(page, "txt2img_refiner_switch_at", 0.5)  # type: ignore[arg-type]
    page.get_by_text("Hires. fix").click()  # type: ignore[attr-defined]
    page.check("#txt2img_enable_hr input")  # type: ignore[attr-defined]
    _set_slider(page, "txt2img_hr_steps", 2)
    _pick(page, "txt2img_hr_sampler", "Euler")  # the first pass is DPM++ 2M
    page.fill("#txt2img_hr_prompt textarea", "a blue fox")  # type: ignore[attr-defined]
    infotext = _generate(page, f"a red fox {width}", seed=5)
    assert "Refiner: tiny-refiner [" in infotext and "Refiner switch at: 0.5" in infotext
    assert "Hires sampler: Euler," in infotext and "Hires prompt: a blue fox" in infotext
    assert "Hires schedule type" not in infotext  # "Use same scheduler": not written, as A1111
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # type: ignore[attr-defined]
    _screenshot(page, f"ui-refiner-hires-{width}.png")
    page.close()
