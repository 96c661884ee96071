"""``/sdapi/v1/options`` with A1111 1.10's whole option set (in-process app, demo model):
every key answered with A1111's default, any A1111 key written is kept across a restart,
the keys this server acts on change generation, and an infotext's options (``Clip skip``)
are applied as A1111 applies them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sdcloud.api.a1111_options import A1111_DEFAULTS
from sdcloud.api.app import create_app
from sdcloud.settings import Settings

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1, "seed": 3}


def app_for(data_dir: Path) -> TestClient:
    settings = Settings.load({"data_dir": data_dir, "model": "demo"}, env={})
    return TestClient(create_app(settings, ui=False))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("options")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[TestClient]:
    with app_for(data_dir) as c:
        yield c


def test_every_a1111_option_is_answered(client: TestClient) -> None:
    opts = client.get("/sdapi/v1/options").json()
    assert set(A1111_DEFAULTS) <= set(opts) and len(opts) > 250
    assert opts["sd_model_checkpoint"] == "demo"
    assert opts["grid_save"] is True and opts["eta_noise_seed_delta"] == 0 and opts["sd_vae"] == "Automatic"
    assert opts["quicksettings_list"] == ["sd_model_checkpoint"] and opts["randn_source"] == "GPU"
    assert client.post("/sdapi/v1/options", json=opts).status_code == 200  # Open WebUI posts it all back


def test_any_a1111_key_is_stored_read_back_and_survives_restart(client: TestClient, data_dir: Path) -> None:
    changes = {"eta_noise_seed_delta": 31337, "grid_format": "jpg", "hide_samplers": ["DDIM"],
               "sd_unet": "None", "lora_preferred_name": "Filename", "not_an_a1111_option": 5}
    r = client.post("/sdapi/v1/options", json=changes)
    assert r.status_code == 200 and r.json() is None
    opts = client.get("/sdapi/v1/options").json()
    for key, value in changes.items():
        if key != "not_an_a1111_option":
            assert opts[key] == value
    assert "not_an_a1111_option" not in opts
    state = Settings.load({"data_dir": data_dir, "model": "demo"}, env={}).state_path
    assert json.loads((state / "options.json").read_text())["grid_format"] == "jpg"
    with app_for(data_dir) as again:
        assert again.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 31337


@pytest.mark.parametrize(("changes", "words"), [
    ({"eta_noise_seed_delta": "lots"}, "eta_noise_seed_delta"),
    ({"grid_save": "yes"}, "grid_save"),
    ({"hide_samplers": "DDIM"}, "hide_samplers"),
    ({"CLIP_stop_at_last_layers": 40}, "between 1 and 12"),
])
def test_a_value_of_the_wrong_kind_is_refused(client: TestClient, changes: dict, words: str) -> None:
    r = client.post("/sdapi/v1/options", json=changes)
    assert r.status_code == 400 and words in r.text


def test_options_we_act_on_take_effect(client: TestClient) -> None:
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})
    try:
        info = json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])
        assert "Clip skip: 2" in info["infotexts"][0]
    finally:
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    one = json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])
    assert "Clip skip" not in one["infotexts"][0]


def test_infotext_options_are_applied_like_override_settings(client: TestClient) -> None:
    pasted = "a fox\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 64x64, Clip skip: 2, Model: no-such-model"
    r = client.post("/sdapi/v1/txt2img", json={"infotext": pasted})
    assert r.status_code == 200, r.text
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert "Clip skip: 2" in text and "Model: demo" in text  # model not swapped (disable_weights_auto_swap)
    explicit = client.post("/sdapi/v1/txt2img", json={"infotext": pasted,
                                                     "override_settings": {"CLIP_stop_at_last_layers": 1}})
    assert "Clip skip" not in json.loads(explicit.json()["info"])["infotexts"][0]
