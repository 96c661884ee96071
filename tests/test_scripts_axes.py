"""X/Y/Z plot axes added for A1111 parity (refiner, sampler sigma tweaks, NGMS, Skip Early CFG,
schedule sigma range and rho, and the ones already there that had no test: Var. seed, Var.
strength, Prompt order, Hires sampler, Schedule type, Styles, Size): each cell is the image a
plain txt2img with that value makes (in-process app, demo models, 64x64, 2-3 steps)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdcloud.api.app import create_app
from sdcloud.engine.demo import write_demo_checkpoint
from sdcloud.settings import Settings

BASE = {"prompt": "a red fox, snow", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 3,
        "sampler_name": "Euler", "seed": 77, "cfg_scale": 7}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("xyz-axes")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    write_demo_checkpoint(ckpts / "tiny-refiner.safetensors", "sdxl-refiner", seed=5)
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nsharp,\"{prompt}, sharp\",noise\n")
    settings = Settings.load({"data_dir": data, "model": "demo-xl"}, env={})
    with TestClient(create_app(settings, ui=False)) as c:
        yield c


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def post(c: TestClient, **fields: Any) -> dict[str, Any]:
    r = c.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert r.status_code == 200, r.text
    return r.json()


def xyz(c: TestClient, axis: str, values: str, dropdown: list[str] | None = None,
        **fields: Any) -> tuple[list[Image.Image], list[str]]:
    """The cells (lone images) and their infotexts of a one-axis plot."""
    args = [axis, values, dropdown or [], "Nothing", "", [], "Nothing", "", [],
            False, True, False, False, False, False, False, 0, False]
    out = post(c, script_name="X/Y/Z plot", script_args=args, **fields)
    info = json.loads(out["info"])
    return [decode(b) for b in out["images"][1:]], info["infotexts"][1:]


def single(c: TestClient, **fields: Any) -> Image.Image:
    return decode(post(c, **fields)["images"][0])


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


CASES = [
    # axis, values text, the fields each value means, request fields of the plot
    ("Refiner checkpoint", "None, tiny-refiner", [{}, {"refiner_checkpoint": "tiny-refiner"}],
     {"refiner_switch_at": 0.5}),
    ("Refiner switch at", "0.3, 1", [{"refiner_switch_at": 0.3}, {"refiner_switch_at": 1.0}],
     {"refiner_checkpoint": "tiny-refiner"}),
    ("Sigma Churn", "0, 2", [{"s_churn": 0}, {"s_churn": 2}], {}),
    ("Sigma noise", "1, 0.5", [{"s_noise": 1}, {"s_noise": 0.5}], {"s_churn": 2}),
    ("Sigma min", "0, 5", [{"s_tmin": 0}, {"s_tmin": 5}], {"s_churn": 2}),
    ("Sigma max", "0, 1", [{"s_tmax": 0}, {"s_tmax": 1}], {"s_churn": 2}),
    ("Negative Guidance minimum sigma", "0, 50", [{"s_min_uncond": 0}, {"s_min_uncond": 50}], {}),
    ("Skip Early CFG", "0, 0.5", [{"override_settings": {"skip_early_cond": 0}},
                                  {"override_settings": {"skip_early_cond": 0.5}}], {}),
    ("Schedule rho", "0, 3", [{}, {"override_settings": {"rho": 3}}], {"scheduler": "Karras"}),
    ("Schedule max sigma", "0, 5", [{}, {"override_settings": {"sigma_max": 5}}], {"scheduler": "Karras"}),
    ("Schedule min sigma", "0, 1", [{}, {"override_settings": {"sigma_min": 1}}], {"scheduler": "Karras"}),
    ("Always discard next-to-last sigma", "False, True",
     [{}, {"override_settings": {"always_discard_next_to_last_sigma": True}}], {"scheduler": "Karras"}),
    ("Var. seed", "5, 6", [{"subseed": 5}, {"subseed": 6}], {"subseed_strength": 0.5}),
    ("Var. strength", "0, 0.6", [{"subseed_strength": 0}, {"subseed_strength": 0.6}], {"subseed": 9}),
    ("Prompt order", "red fox, snow", [{"prompt": "a red fox, snow"}, {"prompt": "a snow, red fox"}], {}),
    ("Schedule type", "Karras, Exponential", [{"scheduler": "Karras"}, {"scheduler": "Exponential"}], {}),
    ("Styles", "sharp", [{"styles": ["sharp"]}], {}),
    ("Size", "64x64, 96x64", [{}, {"width": 96}], {}),
]


@pytest.mark.parametrize(("axis", "values", "cells", "fields"), CASES, ids=[c[0] for c in CASES])
def test_axis_cells_equal_single_generations(client: TestClient, axis: str, values: str,
                                             cells: list[dict[str, Any]], fields: dict[str, Any]) -> None:
    images, texts = xyz(client, axis, values, **fields)
    expected = [single(client, **{**fields, **cell}) for cell in cells]
    assert len(images) == len(expected)
    for image, want in zip(images, expected, strict=True):
        assert same(image, want), (axis, images.index(image))
    if len(expected) > 1 and axis not in ("Prompt order",):
        assert not same(expected[0], expected[1]), f"{axis}: the values make no difference"


def test_hires_sampler_axis(client: TestClient) -> None:
    hires = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.6, "hr_second_pass_steps": 2}
    images, texts = xyz(client, "Hires sampler", "", ["Euler", "DPM++ 2M"], **hires)
    want = single(client, **hires, hr_sampler_name="DPM++ 2M")
    assert same(images[1], want) and "Hires sampler: DPM++ 2M" in texts[1]


def test_refiner_axis_labels_and_bad_values(client: TestClient) -> None:
    images, texts = xyz(client, "Refiner checkpoint", "tiny-refiner", refiner_switch_at=0.5)
    assert "Refiner: tiny-refiner [" in texts[0]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "X/Y/Z plot", "script_args": [
        "Refiner checkpoint", "nope", [], "Nothing", "", [], "Nothing", "", [],
        False, True, False, False, False, False, False, 0, False]})
    assert r.status_code == 400 and "Unknown refiner checkpoint: nope" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "X/Y/Z plot", "script_args": [
        "Refiner switch at", "1.5", [], "Nothing", "", [], "Nothing", "", [],
        False, True, False, False, False, False, False, 0, False]})
    assert r.status_code == 400 and "refiner_switch_at" in r.json()["detail"]


def test_face_restore_axis(client: TestClient) -> None:
    images, _ = xyz(client, "Face restore", "False")
    assert same(images[0], single(client))
    # "True" needs the face_restoration_model option's file (and facexlib): refused before queueing here,
    # with the same answer a plain txt2img with restore_faces gets
    args = ["Face restore", "False, True", [], "Nothing", "", [], "Nothing", "", [],
            False, True, False, False, False, False, False, 0, False]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "X/Y/Z plot", "script_args": args})
    plain = client.post("/sdapi/v1/txt2img", json={**BASE, "restore_faces": True})
    assert r.status_code == plain.status_code and r.status_code in (400, 404, 422)
    assert r.json()["detail"] == plain.json()["detail"]
