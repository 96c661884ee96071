"""Engine generation on the demo model: seeds, samplers, prompts, img2img, inpaint, hires,
cancel. 64x64, few steps, one engine for the module."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdcloud.engine.engine import Engine
from sdcloud.engine.sampler_names import available_samplers, resolve_sampler, scheduler_list
from sdcloud.engine.types import CancelToken, GenerationRequest
from sdcloud.errors import BadRequest
from sdcloud.infotext import parse_infotext
from sdcloud.settings import Settings


def req(**kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a cat in a hat", negative_prompt="blurry", width=64, height=64,
                                   steps=3, seed=42, sampler_name="Euler")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_same_seed_same_image_and_batch_seeds_follow_a1111(engine: Engine) -> None:
    batch = engine.generate(req(batch_size=2))
    again = engine.generate(req(batch_size=2))
    alone = engine.generate(req(seed=43))
    assert batch.seeds == [42, 43]
    assert np.array_equal(arr(batch.images[0]), arr(again.images[0]))
    # image i of a batch gets seed+i: the second image equals seed 43 generated alone
    # (batched float math may round a pixel value differently: allow 2/255)
    assert np.abs(arr(batch.images[1]) - arr(alone.images[0])).max() <= 2
    assert not np.array_equal(arr(batch.images[0]), arr(batch.images[1]))


def test_random_seed_and_batch_count(engine: Engine) -> None:
    r = engine.generate(req(seed=-1, n_iter=2))
    assert len(r.images) == 2 and r.seeds[1] == r.seeds[0] + 1
    assert 0 <= r.seeds[0] < 4294967294


def test_variation_seed(engine: Engine) -> None:
    base = engine.generate(req())
    zero = engine.generate(req(subseed=7, subseed_strength=0.0))
    varied = engine.generate(req(subseed=7, subseed_strength=0.5, batch_size=2))
    assert np.array_equal(arr(base.images[0]), arr(zero.images[0]))
    assert not np.array_equal(arr(base.images[0]), arr(varied.images[0]))
    assert varied.seeds == [42, 42] and varied.subseeds == [7, 8]  # A1111: seeds equal, subseeds step
    parsed = parse_infotext(varied.infotexts[1])
    assert parsed["Variation seed"] == "8" and parsed["Variation seed strength"] == "0.5"


def test_infotext_is_a1111_and_in_png_info(engine: Engine) -> None:
    r = engine.generate(req(sampler_name="DPM++ 2M", scheduler="Automatic", clip_skip=2))
    text = r.images[0].info["parameters"]
    assert text == r.infotexts[0]
    assert text.startswith("a cat in a hat\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, "
                           "Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 64x64, Model: demo")
    parsed = parse_infotext(text)
    assert parsed["Clip skip"] == "2" and parsed["Size-1"] == "64"


@pytest.mark.parametrize("name", available_samplers())
def test_every_supported_sampler_runs(engine: Engine, name: str) -> None:
    r = engine.generate(req(sampler_name=name, steps=2))
    assert r.images[0].size == (64, 64)
    assert f"Sampler: {name}," in r.infotexts[0]


def test_legacy_names_schedules_and_unsupported() -> None:
    assert resolve_sampler("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")
    assert resolve_sampler("DPM++ 2M SDE Exponential") == ("DPM++ 2M SDE", "Exponential")
    assert resolve_sampler("k_euler_a") == ("Euler a", "Automatic")
    assert {s["label"] for s in scheduler_list()} >= {"Automatic", "Karras", "Exponential", "SGM Uniform"}
    with pytest.raises(BadRequest, match="DPM\\+\\+ 2M, "):
        resolve_sampler("DPM fast")
    with pytest.raises(BadRequest, match="unknown sampler 'nope'"):
        resolve_sampler("nope")
    with pytest.raises(BadRequest, match="not available with sampler 'Heun'"):
        resolve_sampler("Heun", "KL Optimal")


def test_karras_schedule_changes_the_image(engine: Engine) -> None:
    a = engine.generate(req(sampler_name="Euler", scheduler="Automatic"))
    b = engine.generate(req(sampler_name="Euler", scheduler="Karras"))
    assert not np.array_equal(arr(a.images[0]), arr(b.images[0]))
    assert "Schedule type: Karras" in b.infotexts[0]


def test_prompt_syntax_changes_conditioning(engine: Engine) -> None:
    enc = engine._ctx.encoder  # the engine's prompt encoder for the loaded model
    plain = enc("a cat", 1).embeds
    weighted = enc("a (cat:1.5)", 1).embeds
    assert plain.shape == (1, 77, 32)
    assert not np.allclose(plain.numpy(), weighted.numpy())
    assert np.allclose(enc("a \\(cat\\)", 1).embeds.numpy(), enc("a \\(cat\\)", 1).embeds.numpy())
    long = enc(", ".join(["a red cat"] * 30), 1).embeds  # ~ 120 tokens → 2 chunks
    assert long.shape[1] == 154
    broken = enc("a cat BREAK a hat", 1).embeds
    assert broken.shape[1] == 154
    skip = enc("a cat", 2).embeds
    assert not np.allclose(plain.numpy(), skip.numpy())


def test_clip_skip_on_flattened_transformers_clip(engine: Engine) -> None:
    """transformers >= 5.6 removed CLIPTextModel.text_model, which crashes diffusers' own
    clip_skip (diffusers #14124). Our encoder must still compute A1111's clip skip: the
    penultimate hidden state through the final layer norm."""
    import torch

    pipe = engine.pipeline
    enc = pipe.text_encoder
    ids = pipe.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = enc(ids, output_hidden_states=True)
        final_norm = getattr(enc, "text_model", enc).final_layer_norm
        expected = final_norm(out.hidden_states[-2])
    got = engine._ctx.encoder("a cat", 2).embeds
    assert torch.allclose(got, expected, atol=1e-5)
    r = engine.generate(req(clip_skip=2))
    assert "Clip skip: 2" in r.infotexts[0]


def test_prompt_editing_switches_mid_run(engine: Engine) -> None:
    a = engine.generate(req(prompt="a cat", steps=4))
    b = engine.generate(req(prompt="a dog", steps=4))
    ab = engine.generate(req(prompt="a [cat:dog:0.5]", steps=4))
    alt = engine.generate(req(prompt="a [cat|dog]", steps=4))
    for x in (ab, alt):
        assert not np.array_equal(arr(x.images[0]), arr(a.images[0]))
        assert not np.array_equal(arr(x.images[0]), arr(b.images[0]))


def test_bad_input_is_rejected_before_work(engine: Engine) -> None:
    for bad in (dict(width=65), dict(height=4096), dict(steps=0), dict(batch_size=0), dict(cfg_scale=-1),
                dict(denoising_strength=2.0), dict(sampler_name="zzz"), dict(mask=Image.new("L", (64, 64)))):
        with pytest.raises(BadRequest):
            engine.generate(req(**bad))


def test_img2img_strength_and_resize_modes(engine: Engine) -> None:
    init = Image.new("RGB", (96, 64), (200, 30, 30))
    low = engine.generate(req(init_images=[init], denoising_strength=0.0))
    assert low.images[0].size == (64, 64)
    # strength 0 runs one step at the smallest sigma (A1111: t_enc = 0)
    assert "Denoising strength: 0," in low.infotexts[0]
    high = engine.generate(req(init_images=[init], denoising_strength=0.9))
    assert not np.array_equal(arr(low.images[0]), arr(high.images[0]))
    for mode in (1, 2, 3):
        r = engine.generate(req(init_images=[init], denoising_strength=0.5, resize_mode=mode, width=64, height=96))
        assert r.images[0].size == (64, 96)


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_keeps_unmasked_pixels(engine: Engine, fill: int, full_res: bool) -> None:
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    r = engine.generate(req(init_images=[init], mask=mask, mask_blur=0, inpainting_fill=fill,
                            inpaint_full_res=full_res, inpaint_full_res_padding=8, denoising_strength=0.8))
    out = arr(r.images[0])
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], arr(init)[outside])
    assert not np.array_equal(out[~outside], arr(init)[~outside])
    assert "Mask blur: 0" in r.infotexts[0]


def test_hires_fix_latent_and_lanczos(engine: Engine) -> None:
    r = engine.generate(req(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5))
    assert r.images[0].size == (96, 96)
    p = parse_infotext(r.infotexts[0])
    assert p["Size-1"] == "64" and p["Hires upscale"] == "1.5" and p["Hires upscaler"] == "Latent"
    assert p["Denoising strength"] == "0.5"
    r2 = engine.generate(req(enable_hr=True, hr_resize_x=128, hr_upscaler="Lanczos", hr_second_pass_steps=2,
                             denoising_strength=0.5))
    assert r2.images[0].size == (128, 128)
    assert parse_infotext(r2.infotexts[0])["Hires steps"] == "2"
    with pytest.raises(BadRequest, match="unknown hires upscaler"):
        engine.generate(req(enable_hr=True, hr_upscaler="ESRGAN_4x"))


def test_interrupt_and_skip_between_steps(engine: Engine) -> None:
    token = CancelToken()
    seen: list[int] = []

    def stop_after_first(p) -> None:  # noqa: ANN001
        seen.append(p.step)
        if p.job == 1:
            token.interrupt()

    r = engine.generate(req(n_iter=3, steps=3), progress=stop_after_first, cancel=token)
    # the finished batch is kept and, as in A1111, the interrupted one as far as it got
    assert r.interrupted and len(r.images) == 2 and len(r.seeds) == 2 and len(r.infotexts) == 2
    token_early = CancelToken()
    token_early.interrupt()
    early = engine.generate(req(n_iter=2, steps=3), cancel=token_early)
    assert early.interrupted and early.images == []  # no step done: nothing to show
    token2 = CancelToken()

    def skip_first(p) -> None:  # noqa: ANN001
        if p.job == 0:
            token2.skip()

    r2 = engine.generate(req(n_iter=2, steps=3), progress=skip_first, cancel=token2)
    assert len(r2.images) == 1 and r2.seeds == [43] and not r2.interrupted


def test_progress_and_preview(engine: Engine) -> None:
    events = []
    engine.generate(req(steps=3, n_iter=2), progress=events.append, preview=True)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].fraction == 1.0 and events[0].preview.size == (64, 64)


def test_demo_xl_generates(tmp_path) -> None:  # noqa: ANN001
    eng = Engine(Settings(data_dir=tmp_path))
    r = eng.generate(req(model="demo-xl", steps=2, batch_size=2))
    assert len(r.images) == 2 and "Model: demo-xl" in r.infotexts[0]
    eng.load_model("demo")
    assert eng.current is not None and eng.current.family == "sd1"
