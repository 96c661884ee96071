"""The A1111 fields of the refiner, the hires pass (checkpoint, sampler, schedule, prompt) and
``AND`` over the API (in-process app, SDXL demo model, 64x64, 2-3 steps): what is checked
before queueing, what the infotext says, and that an infotext read back by PNG Info and sent
as ``infotext`` makes the same image."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdcloud.api.app import create_app
from sdcloud.engine.demo import write_demo_checkpoint
from sdcloud.settings import Settings

BASE = {"prompt": "a red fox", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 3,
        "sampler_name": "Euler", "seed": 1234, "cfg_scale": 7}
HIRES = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.6, "hr_second_pass_steps": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("refiner-api")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    write_demo_checkpoint(ckpts / "tiny-refiner.safetensors", "sdxl-refiner", seed=5)
    write_demo_checkpoint(ckpts / "other-xl.safetensors", "sdxl", seed=9)
    settings = Settings.load({"data_dir": data, "model": "demo-xl"}, env={})
    with TestClient(create_app(settings, ui=False)) as c:
        yield c


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def txt2img(c: TestClient, **fields: Any) -> tuple[Image.Image, str, dict[str, Any]]:
    r = c.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    import json

    info = json.loads(body["info"])
    return decode(body["images"][0]), info["infotexts"][0], body


def png_info(c: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/sdapi/v1/png-info", json={"image": body["images"][0]})
    assert r.status_code == 200, r.text
    return r.json()


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def short_title(c: TestClient, name: str) -> str:
    model = next(m for m in c.get("/sdapi/v1/sd-models").json() if m["model_name"] == name)
    return f"{name} [{model['hash']}]" if model["hash"] else name


def test_refiner_fields_infotext_and_round_trip(client: TestClient) -> None:
    plain, _, _ = txt2img(client)
    image, text, body = txt2img(client, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5)
    assert not same(plain, image)
    info = png_info(client, body)
    params = info["parameters"]
    assert params["Refiner"] == short_title(client, "tiny-refiner")
    assert params["Refiner switch at"] == "0.5" and "Refiner: " in text
    # PNG Info -> request: the infotext alone names the refiner and the switch
    again, text2, _ = txt2img(client, infotext=info["info"])
    assert same(again, image) and text2 == text
    # "None" (what A1111's UI sends for no refiner) and switch at 1.0 are both no refiner
    none, _, _ = txt2img(client, refiner_checkpoint="None", refiner_switch_at=0.5)
    never, never_text, _ = txt2img(client, refiner_checkpoint="tiny-refiner", refiner_switch_at=1.0)
    assert same(none, plain) and same(never, plain) and "Refiner" not in never_text


def test_refiner_bad_input_is_400(client: TestClient) -> None:
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "refiner_checkpoint": "no-such-model",
                                               "refiner_switch_at": 0.5})
    assert r.status_code == 400 and "refiner_checkpoint" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "refiner_checkpoint": "tiny-refiner",
                                               "refiner_switch_at": 1.5})
    assert r.status_code == 400 and "refiner_switch_at" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, **HIRES, "hr_checkpoint_name": "nope"})
    assert r.status_code == 400 and "hr_checkpoint_name" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": {"hires_fix_refiner_pass": "third"}})
    assert r.status_code == 400 and "hires_fix_refiner_pass" in r.json()["detail"]


def test_refiner_options_act(client: TestClient) -> None:
    fields = {**HIRES, "refiner_checkpoint": "tiny-refiner", "refiner_switch_at": 0.4}
    second, second_text, _ = txt2img(client, **fields)
    first, first_text, _ = txt2img(client, **fields, override_settings={"hires_fix_refiner_pass": "first pass"})
    steps, steps_text, _ = txt2img(client, **fields, override_settings={"refiner_switch_by_sample_steps": True})
    assert "Hires refiner" not in second_text and "Hires refiner: first pass" in first_text
    assert "Refiner switch by sampling steps: True" in steps_text
    assert not same(first, second)


def test_hires_fields_infotext_and_round_trip(client: TestClient) -> None:
    fields = {**HIRES, "hr_checkpoint_name": "other-xl", "hr_sampler_name": "DPM++ 2M", "hr_scheduler": "Karras",
              "hr_prompt": "a blue fox", "hr_negative_prompt": "noisy"}
    plain, _, _ = txt2img(client, **HIRES)
    image, text, body = txt2img(client, **fields)
    assert image.size == (96, 96) and not same(plain, image)
    params = png_info(client, body)["parameters"]
    assert params["Hires checkpoint"] == short_title(client, "other-xl")
    assert (params["Hires sampler"], params["Hires schedule type"]) == ("DPM++ 2M", "Karras")
    assert (params["Hires prompt"], params["Hires negative prompt"]) == ("a blue fox", "noisy")
    again, text2, _ = txt2img(client, infotext=text)
    assert same(again, image) and text2 == text
    # "Use same checkpoint" / "Use same sampler" are A1111's words for the first pass's
    same_all, _, _ = txt2img(client, **HIRES, hr_checkpoint_name="Use same checkpoint",
                             hr_sampler_name="Use same sampler")
    assert same(same_all, plain)


def test_and_prompt_over_the_api(client: TestClient) -> None:
    plain, _, _ = txt2img(client, prompt="a red fox")
    composed, text, _ = txt2img(client, prompt="a red fox AND a snowy forest:0.8")
    assert not same(plain, composed) and text.startswith("a red fox AND a snowy forest:0.8\n")
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": " AND ".join(["x"] * 40)})
    assert r.status_code == 400 and "AND parts" in r.json()["detail"]
