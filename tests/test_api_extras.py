"""Extras over real HTTP: model upscalers in ``extra-single-image`` / ``extra-batch-images``
(upscaler 2 blended by visibility, resize by / to with crop), ``/upscalers``, ``/face-restorers``
and the refusal when face restoration cannot run here."""

from __future__ import annotations

import base64
import io
import shutil
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdcloud.upscalers import fixtures
from sdcloud.upscalers.faces import why_unavailable


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.fixture(scope="module")
def server(sdcloud_server: Any) -> Any:
    """The session's server with upscaler files added (removed afterwards: other modules list it)."""
    root = sdcloud_server.data_dir / "models"
    fixtures.save_esrgan_old(root / "ESRGAN" / "4x-UltraSharp.pth", seed=1)
    fixtures.save_compact(root / "RealESRGAN" / "realesr-animevideov3.pth", seed=2)
    (root / "GFPGAN").mkdir(parents=True, exist_ok=True)
    (root / "GFPGAN" / "GFPGANv1.4.pth").write_bytes(b"placeholder: listing only reads names")
    yield sdcloud_server
    for folder in ("ESRGAN", "RealESRGAN", "GFPGAN"):
        shutil.rmtree(root / folder)


@pytest.fixture(scope="module")
def client(server: Any) -> httpx.Client:
    with server.client() as c:
        yield c


SRC = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8))


def test_upscalers_listing_by_file_stem_and_a1111_name(client: httpx.Client) -> None:
    listing = {u["name"]: u for u in client.get("/sdapi/v1/upscalers").json()}
    assert {"None", "Lanczos", "Nearest", "4x-UltraSharp", "R-ESRGAN AnimeVideo"} <= set(listing)
    assert listing["4x-UltraSharp"]["model_name"] == "ESRGAN" and listing["4x-UltraSharp"]["scale"] == 4.0
    models = client.get("/sdapi/v1/realesrgan-models").json()
    assert [m["name"] for m in models] == ["R-ESRGAN AnimeVideo"]


def test_extra_single_image_with_a_model_and_upscaler_2(client: httpx.Client) -> None:
    body = {"image": b64(SRC), "upscaler_1": "4x-UltraSharp", "upscaling_resize": 2}
    one = client.post("/sdapi/v1/extra-single-image", json=body)
    assert one.status_code == 200, one.text
    first = decode(one.json()["image"])
    assert first.size == (60, 40)
    assert "Postprocess upscaler: 4x-UltraSharp" in one.json()["html_info"]
    lanczos = np.asarray(SRC.resize((60, 40), Image.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(first, dtype=np.int16) - lanczos).mean() > 1
    both = client.post("/sdapi/v1/extra-single-image", json={
        **body, "upscaler_2": "R-ESRGAN AnimeVideo", "extras_upscaler_2_visibility": 0.5})
    assert both.status_code == 200, both.text
    blended = np.asarray(decode(both.json()["image"]), dtype=np.int16)
    assert not np.array_equal(blended, np.asarray(first, dtype=np.int16))
    assert "Postprocess upscaler 2: R-ESRGAN AnimeVideo" in both.json()["html_info"]


def test_extra_batch_resize_to_with_crop(client: httpx.Client) -> None:
    r = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": b64(SRC), "name": "a.png"}, {"data": b64(SRC.rotate(90, expand=True)), "name": "b"}],
        "upscaler_1": "R-ESRGAN AnimeVideo", "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 48,
        "upscaling_crop": True})
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(64, 48), (64, 48)]
    assert "Postprocess upscale to: 64x48" in r.json()["html_info"]


def test_unknown_upscaler_is_400_listing_the_present_ones(client: httpx.Client) -> None:
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(SRC), "upscaler_1": "ESRGAN_4x"})
    assert r.status_code == 400 and "4x-UltraSharp" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"enable_hr": True, "hr_upscaler": "nope", "width": 64, "height": 64,
                                                "steps": 1})
    assert r.status_code == 400 and "4x-UltraSharp" in r.json()["detail"]


def test_face_restorers_listing_and_refusal(client: httpx.Client) -> None:
    listing = client.get("/sdapi/v1/face-restorers").json()
    assert [r["name"] for r in listing] == ["GFPGAN"] and listing[0]["cmd_dir"].endswith("GFPGAN")
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(SRC), "codeformer_visibility": 1})
    assert r.status_code == 400 and "codeformer-v0.1.0.pth" in r.json()["detail"]
    if why_unavailable() is None:
        pytest.skip("face restoration can run here; the refusal is for machines without spandrel/facexlib")
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(SRC), "gfpgan_visibility": 1})
    assert r.status_code == 422
    assert "face restoration (GFPGAN) is not available" in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_restore_faces_in_txt2img_is_refused_when_it_cannot_run(client: httpx.Client) -> None:
    body = {"prompt": "a face", "width": 64, "height": 64, "steps": 1, "restore_faces": True}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 400 and "codeformer-v0.1.0.pth" in r.json()["detail"]  # the default model, no file
    if why_unavailable() is None:
        pytest.skip("face restoration can run here")
    r = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"face_restoration_model": "GFPGAN"}})
    assert r.status_code == 422 and "not available on this server" in r.json()["detail"]
