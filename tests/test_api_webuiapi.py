"""The ``webuiapi`` client from PyPI (written for AUTOMATIC1111) works against sdcloud unchanged."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import webuiapi
from PIL import Image

from waiting import wait_until


@pytest.fixture(scope="module")
def api(sdcloud_server: Any) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=sdcloud_server.port, sampler="Euler a", steps=2)


def test_models_and_options(api: webuiapi.WebUIApi) -> None:
    names = api.util_get_model_names()
    assert "demo" in names and names == sorted(names)
    api.util_set_model("demo")
    assert api.util_get_current_model() == "demo"
    opts = api.get_options()
    assert opts["sd_model_checkpoint"] == "demo"
    assert api.set_options({"CLIP_stop_at_last_layers": 1}) is None
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert "Karras" in [s["label"] for s in api.get_schedulers()]
    assert "x/y/z plot" in api.get_scripts()["txt2img"]
    for call in (
        api.get_sd_vae,
        api.get_loras,
        api.get_upscalers,
        api.get_latent_upscale_modes,
        api.get_hypernetworks,
        api.get_face_restorers,
        api.get_prompt_styles,
        api.get_embeddings,
        api.get_memory,
        api.get_cmd_flags,
        api.refresh_checkpoints,
    ):
        call()  # each must answer JSON


def test_txt2img_img2img_and_png_info(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(
        prompt="a lighthouse", negative_prompt="fog", seed=11, cfg_scale=7, width=64, height=64, steps=2
    )
    assert isinstance(result.image, Image.Image) and result.image.size == (64, 64)
    assert result.info["all_seeds"] == [11]
    assert result.info["infotexts"][0].startswith(
        "a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler a"
    )
    assert result.parameters["prompt"] == "a lighthouse"
    again = api.img2img(
        images=[result.image],
        prompt="a lighthouse at night",
        denoising_strength=0.5,
        seed=12,
        width=64,
        height=64,
        steps=2,
    )
    assert again.image.size == (64, 64) and again.info["all_seeds"] == [12]
    assert "Denoising strength: 0.5" in again.info["infotexts"][0]
    info = api.png_info(again.image)
    assert info.info == again.info["infotexts"][0]
    assert info.parameters["Seed"] == "12"


def test_progress_and_interrupt(api: webuiapi.WebUIApi) -> None:
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    out: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: out.update(
            r=api.txt2img(prompt="long", width=64, height=64, steps=40, n_iter=2, seed=5)
        )
    )
    worker.start()
    p = wait_until(lambda: (q := api.get_progress())["state"]["sampling_step"] >= 1 and q, 120, 0.02,
                   "the first step")
    assert worker.is_alive()
    assert p["progress"] > 0 and p["state"]["job_count"] == 2
    assert api.interrupt() == {}
    worker.join(120)
    assert not worker.is_alive()
    assert out["r"].info["all_seeds"][0] == 5  # the interrupted call still answers 200 with its info
    api.util_wait_for_ready(check_interval=0.1)


def test_extras_and_controlnet_detect_through_the_client(api: webuiapi.WebUIApi) -> None:
    """Extras (single and batch) and ControlNet's annotator routes, called as A1111 scripts call them."""
    image = Image.new("RGB", (64, 48), "white")
    for x in range(16, 48):
        image.putpixel((x, 24), (0, 0, 0))
    one = api.extra_single_image(image, upscaler_1="Lanczos", upscaling_resize=2)
    assert one.image.size == (128, 96)
    batch = api.extra_batch_images([image, image.rotate(90, expand=True)], upscaler_1="Nearest",
                                   upscaling_resize=2)
    assert [im.size for im in batch.images] == [(128, 96), (96, 128)]
    assert "canny" in api.controlnet_module_list()
    assert isinstance(api.controlnet_model_list(), list)
    detected = api.controlnet_detect([image], module="canny", processor_res=64, threshold_a=100, threshold_b=200)
    edges = detected.image.convert("L")
    assert edges.getextrema()[1] > 0  # the line's edges are found
