"""Model upscalers from the A1111 folders: random-weight files saved in the key layouts users
have (original ESRGAN ``model.N``, basicsr ``params_ema``, Real-ESRGAN compact ``params``),
loaded by key-layout detection, run tiled, listed under A1111's names, used in hires fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import NotFound, Unsupported
from sdcloud.infotext import parse_infotext
from sdcloud.upscalers import Upscalers, fixtures
from sdcloud.upscalers.loading import load_model, spandrel_error
from sdcloud.upscalers.tiling import run_tiled


def _conv(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.conv2d(x, s[f"{name}.weight"], s[f"{name}.bias"], padding=1)


def reference_basicsr_rrdb(x: torch.Tensor, s: dict[str, torch.Tensor], nb: int) -> torch.Tensor:
    """basicsr's RRDBNet.forward (x4), written directly over its own key names."""
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    feat = _conv(x, s, "conv_first")
    body = feat
    for b in range(nb):
        rrdb_in = body
        for r in (1, 2, 3):
            xs = [body]
            for c in range(1, 5):
                xs.append(lrelu(_conv(torch.cat(xs, 1), s, f"body.{b}.rdb{r}.conv{c}")))
            body = _conv(torch.cat(xs, 1), s, f"body.{b}.rdb{r}.conv5") * 0.2 + body
        body = body * 0.2 + rrdb_in
    feat = feat + _conv(body, s, "conv_body")
    feat = lrelu(_conv(F.interpolate(feat, scale_factor=2, mode="nearest"), s, "conv_up1"))
    feat = lrelu(_conv(F.interpolate(feat, scale_factor=2, mode="nearest"), s, "conv_up2"))
    return _conv(lrelu(_conv(feat, s, "conv_hr")), s, "conv_last")


def reference_compact(x: torch.Tensor, s: dict[str, torch.Tensor], n_layers: int, scale: int) -> torch.Tensor:
    out = x
    for i in range(0, n_layers - 1, 2):
        out = F.prelu(_conv(out, s, f"body.{i}"), s[f"body.{i + 1}.weight"])
    out = F.pixel_shuffle(_conv(out, s, f"body.{n_layers - 1}"), scale)
    return out + F.interpolate(x, scale_factor=scale, mode="nearest")


def test_basicsr_params_ema_file_matches_basicsr_forward(tmp_path: Path) -> None:
    path = fixtures.save_basicsr_rrdb(tmp_path / "RealESRGAN_x4plus.pth", nb=2, seed=1)
    model = load_model(path)
    assert (model.arch, model.scale) == ("ESRGAN", 4)
    x = torch.rand(1, 3, 12, 10)
    state = torch.load(path, weights_only=True)["params_ema"]
    with torch.no_grad():
        assert torch.allclose(model.net(x), reference_basicsr_rrdb(x, state, nb=2), atol=1e-5)


def test_old_esrgan_layout_is_the_same_network(tmp_path: Path) -> None:
    old = load_model(fixtures.save_esrgan_old(tmp_path / "4x-UltraSharp.pth", nb=2, seed=3))
    new = load_model(fixtures.save_basicsr_rrdb(tmp_path / "new.pth", nb=2, seed=3))
    assert (old.arch, old.scale) == ("ESRGAN", 4)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(old.net(x), new.net(x))
    two = load_model(fixtures.save_esrgan_old(tmp_path / "2x_old.pth", scale=2))
    assert two.scale == 2 and two.net(x).shape[-2:] == (18, 22)


def test_basicsr_x2_uses_pixel_unshuffle(tmp_path: Path) -> None:
    model = load_model(fixtures.save_basicsr_rrdb(tmp_path / "RealESRGAN_x2plus.pth", scale=2))
    assert model.scale == 2 and model.net.params.unshuffle == 2
    assert model.net(torch.rand(1, 3, 8, 6)).shape == (1, 3, 16, 12)


def test_compact_file_matches_srvgg_forward(tmp_path: Path) -> None:
    path = fixtures.save_compact(tmp_path / "realesr-general-x4v3.pth", num_conv=3, seed=2)
    model = load_model(path)
    assert (model.arch, model.scale) == ("RealESRGAN-compact", 4)
    state = torch.load(path, weights_only=True)["params"]
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.allclose(model.net(x), reference_compact(x, state, 9, 4), atol=1e-5)


def test_tiled_equals_untiled_within_the_receptive_field(tmp_path: Path) -> None:
    model = load_model(fixtures.save_compact(tmp_path / "c.pth", num_conv=2))  # 4 convs: 4 px of context
    x = torch.rand(1, 3, 50, 37)
    calls: list[tuple[int, int]] = []
    tiled = run_tiled(model.net, x, model.scale, tile=16, overlap=8, on_tile=lambda d, t: calls.append((d, t)))
    with torch.no_grad():
        whole = model.net(x)
    assert calls[-1] == (12, 12)  # 4 x 3 tiles
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_safetensors_and_module_prefix(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = fixtures.compact_state(fixtures.archs.CompactParams(3, 3, 8, 1, 2))
    save_file({f"module.{k}": v for k, v in state.items()}, str(tmp_path / "x2.safetensors"))
    assert load_model(tmp_path / "x2.safetensors").scale == 2


def test_not_an_upscaler_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(4, 4)}, str(tmp_path / "mystery.safetensors"))
    with pytest.raises(Unsupported) as err:
        load_model(tmp_path / "mystery.safetensors")
    msg = str(err.value)
    assert "\n" not in msg and "mystery.safetensors" in msg and "encoder.weight" in msg
    if spandrel_error() is not None:
        assert "spandrel cannot be imported" in msg
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(Exception, match="junk.pth"):
        load_model(tmp_path / "junk.pth")


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fixtures.save_basicsr_rrdb(root / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth", seed=5)
    fixtures.save_compact(root / "RealESRGAN" / "realesr-general-x4v3.pth")
    fixtures.save_esrgan_old(root / "ESRGAN" / "4x-UltraSharp.pth")
    fixtures.save_compact(root / "ESRGAN" / "2x_Tiny.pth", scale=2)
    return root


def test_registry_names_listing_and_lookup(models_root: Path) -> None:
    ups = Upscalers(models_root)
    names = ups.names()
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert {"4x-UltraSharp", "2x_Tiny", "R-ESRGAN 4x+ Anime6B", "R-ESRGAN General 4xV3"} <= set(names)
    listing = {u["name"]: u for u in ups.listing()}
    assert listing["4x-UltraSharp"]["model_name"] == "ESRGAN" and listing["4x-UltraSharp"]["scale"] == 4.0
    assert listing["2x_Tiny"]["scale"] == 2.0
    assert listing["R-ESRGAN 4x+ Anime6B"]["model_path"].endswith("RealESRGAN_x4plus_anime_6B.pth")
    assert ups.find("RealESRGAN_x4plus_anime_6B").name == "R-ESRGAN 4x+ Anime6B"  # the stem works too
    assert ups.find("4x-ultrasharp").name == "4x-UltraSharp"
    with pytest.raises(NotFound, match="4x-UltraSharp"):
        ups.find("ESRGAN_4x")


def test_upscale_reaches_the_asked_scale_like_a1111(models_root: Path) -> None:
    ups = Upscalers(models_root, tile=16)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8))
    assert ups.upscale(img, "4x-UltraSharp", 4).size == (160, 96)
    assert ups.upscale(img, "4x-UltraSharp", 2).size == (80, 48)  # one 4x pass, Lanczos down
    assert ups.upscale(img, "2x_Tiny", 4).size == (160, 96)  # two 2x passes
    assert ups.upscale_to(img, "R-ESRGAN General 4xV3", 100, 60).size == (100, 60)
    model_out = np.asarray(ups.upscale(img, "2x_Tiny", 2), dtype=np.int16)
    lanczos = np.asarray(img.resize((80, 48), Image.LANCZOS), dtype=np.int16)
    assert np.abs(model_out - lanczos).mean() > 1  # the network ran, not a filter


def test_hires_fix_with_a_model_upscaler(engine: object) -> None:
    root = engine.settings.models_root  # type: ignore[attr-defined]
    fixtures.save_basicsr_rrdb(root / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth")
    base = dict(prompt="a cat", width=64, height=64, steps=2, seed=7, sampler_name="Euler", enable_hr=True,
                hr_scale=2.0, denoising_strength=0.3)
    r = engine.generate(GenerationRequest(**base, hr_upscaler="R-ESRGAN 4x+ Anime6B"))  # type: ignore[attr-defined]
    assert r.images[0].size == (128, 128)
    assert parse_infotext(r.infotexts[0])["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    lanczos = engine.generate(GenerationRequest(**base, hr_upscaler="Lanczos"))  # type: ignore[attr-defined]
    assert not np.array_equal(np.asarray(r.images[0]), np.asarray(lanczos.images[0]))
    from sdcloud.errors import BadRequest

    with pytest.raises(BadRequest, match="R-ESRGAN 4x\\+ Anime6B"):
        engine.generate(GenerationRequest(**{**base, "hr_upscaler": "4x-Missing"}))  # type: ignore[attr-defined]
