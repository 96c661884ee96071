"""sd-webui-controlnet's API over real HTTP: units in ``alwayson_scripts.controlnet.args``,
``/controlnet/model_list``, ``module_list`` and ``detect``; bad units are 422 listing choices."""

from __future__ import annotations

import base64
import io
import json
import shutil
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 3, "prompt": "a ring"}


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def ring() -> Image.Image:
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), outline="black", width=4)
    return img


@pytest.fixture(scope="module")
def client(sdcloud_server: Any) -> httpx.Client:
    from sdcloud.controlnet import fixtures
    from sdcloud.engine.demo import build_demo_pipeline

    folder = sdcloud_server.data_dir / "models" / "ControlNet"
    fixtures.save_controlnet(folder / "control_tiny_canny.pth", build_demo_pipeline("sd15").unet, seed=4)
    fixtures.save_annotator(folder / "annotators" / "lineart" / "sk_model.pth", "lineart", seed=5)
    with sdcloud_server.client() as c:
        yield c
    shutil.rmtree(folder)


def test_lists_and_detect(client: httpx.Client) -> None:
    assert client.get("/controlnet/model_list").json() == {"model_list": ["control_tiny_canny"]}
    modules = client.get("/controlnet/module_list").json()
    assert {"none", "canny", "inpaint_only", "shuffle"} <= set(modules["module_list"])
    assert modules["module_detail"]["canny"]["sliders"][1] == {"name": "Threshold A", "value": 100}
    r = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64(ring())],
                                                "controlnet_processor_res": 64})
    assert r.status_code == 200 and r.json()["info"] == "Success"
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))))
    assert edges.shape == (64, 64, 3) and edges.max() == 255 and edges.mean() < 60
    bad = client.post("/controlnet/detect", json={"controlnet_module": "magic", "controlnet_input_images": ["x"]})
    assert bad.status_code == 422 and "canny" in bad.json()["detail"]
    # processor_res and thresholds are honoured
    sizes = {res: Image.open(io.BytesIO(base64.b64decode(client.post("/controlnet/detect", json={
        "controlnet_module": "canny", "controlnet_input_images": [b64(ring())], "controlnet_processor_res": res,
    }).json()["images"][0]))).size for res in (64, 128)}
    assert sizes == {64: (64, 64), 128: (128, 128)}
    grey = Image.new("RGB", (64, 64), (128, 128, 128))

    def binarized(level: int) -> float:
        r = client.post("/controlnet/detect", json={"controlnet_module": "threshold", "controlnet_threshold_a": level,
                                                    "controlnet_input_images": [b64(grey)],
                                                    "controlnet_processor_res": 64})
        return float(np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))).mean())

    assert binarized(200) == 0 and binarized(50) == 255


def test_weight_based_module_from_the_user_s_annotator_file(client: httpx.Client) -> None:
    modules = client.get("/controlnet/module_list").json()
    assert "lineart_realistic" in modules["module_list"] and "openpose" not in modules["module_list"]
    assert modules["module_detail"]["lineart_realistic"]["model_free"] is False
    r = client.post("/controlnet/detect", json={"controlnet_module": "lineart_realistic",
                                                "controlnet_input_images": [b64(ring())],
                                                "controlnet_processor_res": 64})
    assert r.status_code == 200, r.text
    lines = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))))
    assert lines.shape == (64, 64, 3) and lines.std() > 0
    r = client.post("/controlnet/detect", json={"controlnet_module": "openpose_full",
                                                "controlnet_input_images": [b64(ring())]})
    detail = r.json()["detail"]
    assert r.status_code == 422 and "body_pose_model.pth" in detail and "ControlNet/annotators/openpose/" in detail
    unit = {"image": b64(ring()), "module": "lineart_realistic", "model": "control_tiny_canny",
            "processor_res": 64}
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert r.status_code == 200, r.text
    assert "Module: lineart_realistic" in json.loads(r.json()["info"])["infotexts"][0]


def test_txt2img_with_a_controlnet_unit(client: httpx.Client) -> None:
    plain = client.post("/sdapi/v1/txt2img", json=SMALL).json()
    unit = {"image": b64(ring()), "module": "canny", "model": "control_tiny_canny [0123abcd]", "weight": 1.0,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "resize_mode": "Crop and Resize",
            "pixel_perfect": True}
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny [0123abcd], Weight: 1' in info["infotexts"][0]
    a = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(base64.b64decode(plain["images"][0]))), dtype=np.int16)
    assert np.abs(a - b).mean() > 0.5
    # PNG Info reads the unit back (the extension's round trip)
    from sdcloud.controlnet.units import unit_from_infotext

    params = client.post("/sdapi/v1/png-info", json={"image": r.json()["images"][0]}).json()["parameters"]
    back = unit_from_infotext(params["ControlNet 0"])
    assert back == {"module": "canny", "model": "control_tiny_canny [0123abcd]", "weight": 1.0,
                    "resize_mode": "Crop and Resize", "processor_res": 512, "guidance_start": 0.0,
                    "guidance_end": 1.0, "pixel_perfect": True, "control_mode": "Balanced"}
    again = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [
        {**back, "image": b64(ring())}]}}})
    assert again.json()["images"][0] == r.json()["images"][0]  # the same unit: the same image


@pytest.mark.parametrize(("unit", "needle"), [
    ({"module": "canny", "model": "control_v11p_sd15_openpose"}, "available: control_tiny_canny"),
    ({"module": "magic", "model": "control_tiny_canny"}, "available: none, canny"),
])
def test_unknown_model_or_module_is_422_listing_the_choices(client: httpx.Client, unit: dict, needle: str) -> None:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"ControlNet": {"args": [
        {**unit, "image": b64(ring())}]}}})
    assert r.status_code == 422 and needle in r.json()["detail"]


def test_unit_without_image_and_other_scripts(client: httpx.Client) -> None:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [
        {"module": "canny", "model": "control_tiny_canny"}]}}})
    assert r.status_code == 400 and "has no image" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"adetailer": {"args": []}}})
    assert r.status_code == 422 and "adetailer" in r.json()["detail"]  # as A1111
