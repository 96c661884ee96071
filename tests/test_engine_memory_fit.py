"""A generation that cannot fit the memory of its device is refused before any work (issue 19
part 2: limits that fit the loaded model and memory), with a message naming size, batch and memory;
what fits runs as before."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from sdcloud.engine.engine import Engine
from sdcloud.engine.memory_fit import GB, step_bytes
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest
from sdcloud.settings import Limits, Settings

SD15_UNET = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2}
SDXL_UNET = {"block_out_channels": (320, 640, 1280), "layers_per_block": 2}
VAE = {"block_out_channels": (128, 256, 512, 512)}


def test_estimate_grows_with_pixels_and_batch_and_stays_below_real_use() -> None:
    small = step_bytes(SD15_UNET, VAE, 512, 512, 1, True, 2)
    assert step_bytes(SD15_UNET, VAE, 1024, 1024, 1, True, 2) == 4 * small
    assert step_bytes(SD15_UNET, VAE, 512, 512, 4, True, 2) == 4 * small
    # a lower bound: SD 1.5 at 512x512 in fp16 runs on 4 GB cards, so its estimate is far below that
    assert small < 0.5 * GB
    # SDXL 2048x2048 x 8 in fp16 cannot fit a 24 GB card (~17 GB free beside its weights): the
    # VAE decode of the batch alone is above that
    assert step_bytes(SDXL_UNET, VAE, 2048, 2048, 8, True, 2) > 17 * GB
    # VAE tiling takes the full-size decode out of the estimate
    assert step_bytes(SDXL_UNET, VAE, 2048, 2048, 8, True, 2, vae_tiled=True) < 17 * GB


def test_a_request_too_big_for_the_memory_is_refused_at_once(tmp_path: Path) -> None:
    limits = dataclasses.replace(Limits(), max_memory_mb=4)  # the demo model; a 4 MB device
    eng = Engine(Settings(data_dir=tmp_path, limits=limits))
    eng.load_model("demo")
    fits = eng.generate(GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=1))
    assert len(fits.images) == 1
    start = time.monotonic()
    with pytest.raises(BadRequest, match=r"256x256 with batch_size 2 needs at least .* GB of memory") as err:
        eng.generate(GenerationRequest(prompt="a cat", width=256, height=256, batch_size=2, steps=2, seed=1))
    assert time.monotonic() - start < 1.0  # before any sampling
    assert "lower the size or batch_size" in str(err.value) and str(tmp_path) not in str(err.value)
    # the hires pass counts too
    with pytest.raises(BadRequest, match="512x512"):
        eng.generate(GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=1, enable_hr=True,
                                       hr_scale=8))


def test_negative_memory_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="max_memory_mb"):
        Settings.load(env={"SDCLOUD_MAX_MEMORY_MB": "-1", "SDCLOUD_DATA_DIR": str(tmp_path)})


def test_the_api_answers_400_with_the_reason(tmp_path: Path) -> None:
    from conftest import launch

    server = launch(tmp_path / "data", env={"SDCLOUD_MAX_MEMORY_MB": "4"})
    try:
        with server.client() as client:
            r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 256, "height": 256,
                                                       "batch_size": 2, "steps": 2})
            assert r.status_code == 400, r.text
            assert "needs at least" in r.json()["detail"] and "GB of memory" in r.json()["detail"]
            ok = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 2})
            assert ok.status_code == 200 and len(ok.json()["images"]) == 1
    finally:
        server.stop()
