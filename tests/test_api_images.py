"""Image input/output rules of the API, without a server: base64 forms, decompression bombs,
URL images (off by default, never to local or private addresses), infotext kept on output."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from sdcloud.api.image_input import check_url, decode_image
from sdcloud.api.options import OptionsStore
from sdcloud.errors import BadRequest
from sdcloud.image_files import encode_image
from sdcloud.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load({"data_dir": str(tmp_path), "max_width": 64, "max_height": 64}, env={})


def b64png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_raw_base64_and_data_urls(settings: Settings) -> None:
    raw = b64png((32, 16))
    assert decode_image(raw, settings).size == (32, 16)
    assert decode_image("data:image/png;base64," + raw, settings).size == (32, 16)
    with pytest.raises(BadRequest, match="empty"):
        decode_image("  ", settings)
    with pytest.raises(BadRequest, match="not a readable image"):
        decode_image(base64.b64encode(b"GIF89a-but-not-really").decode(), settings)


def test_images_beyond_the_pixel_limit_are_refused(settings: Settings) -> None:
    assert decode_image(b64png((128, 128)), settings).size == (128, 128)  # 4 x 64 x 64 pixels is the cap
    with pytest.raises(BadRequest, match="pixels"):
        decode_image(b64png((129, 128)), settings)


def test_url_images_are_off_unless_enabled(settings: Settings) -> None:
    with pytest.raises(BadRequest, match="--allow-url-images"):
        decode_image("https://example.com/cat.png", settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x.png",
        "http://localhost/x.png",
        "http://[::1]/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.10/x.png",
        "http://172.16.5.5/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://224.0.0.1/x.png",
    ],
)
def test_local_and_private_addresses_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="local or private"):
        check_url(url)
    allowed = Settings.load({"data_dir": str(tmp_path), "allow_url_images": True}, env={})
    with pytest.raises(BadRequest, match="local or private"):
        decode_image(url, allowed)


def test_bad_url_forms_are_refused() -> None:
    with pytest.raises(BadRequest):
        check_url("http:///nohost")
    with pytest.raises(BadRequest, match="does not resolve"):
        check_url("http://no-such-host.invalid/x.png")


def test_encoding_keeps_the_infotext() -> None:
    img = Image.new("RGB", (8, 8), "blue")
    img.info["parameters"] = "a cat\nSteps: 2, Seed: 1, ünïcode"
    png = Image.open(io.BytesIO(base64.b64decode(encode_image(img))))
    assert png.format == "PNG" and png.info["parameters"] == img.info["parameters"]
    from sdcloud.image_files import read_image_infotext

    for fmt, name in (("jpg", "JPEG"), ("webp", "WEBP")):
        other = Image.open(io.BytesIO(base64.b64decode(encode_image(img, fmt))))
        assert other.format == name and read_image_infotext(other) == img.info["parameters"]


def test_options_persist_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    store = OptionsStore(path)
    store.update({"CLIP_stop_at_last_layers": 2, "samples_format": "JPG", "not_an_option": 1})
    again = OptionsStore(path).get()
    assert again["CLIP_stop_at_last_layers"] == 2 and again["samples_format"] == "jpg"
    assert "not_an_option" not in again
    for bad in (
        {"CLIP_stop_at_last_layers": 0},
        {"return_grid": "yes"},
        {"samples_format": "bmp"},
        {"jpeg_quality": 1.5},
    ):
        with pytest.raises(BadRequest):
            store.update(bad)
    path.write_text("{broken")
    assert OptionsStore(path).get()["CLIP_stop_at_last_layers"] == 1  # a damaged file falls back to defaults
