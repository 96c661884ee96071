"""Second checkpoints and composable prompts in the engine, on the demo models (64x64, 3 steps):
the SDXL refiner (``refiner_checkpoint``/``refiner_switch_at``), the hires pass's own
checkpoint, sampler, schedule and prompt, and ``AND`` (A1111's composable diffusion)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcloud.engine import residency
from sdcloud.engine.demo import write_demo_checkpoint
from sdcloud.engine.engine import Engine
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest, Unsupported
from sdcloud.infotext import infotext_to_request_fields, parse_infotext
from sdcloud.prompt_syntax import split_and
from sdcloud.settings import Settings


def req(**kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a cat in a hat", negative_prompt="blurry", width=64, height=64,
                                   steps=3, seed=42, sampler_name="Euler")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def same(a: Image.Image, b: Image.Image, tolerance: int = 0) -> bool:
    return bool(np.abs(arr(a) - arr(b)).max() <= tolerance)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refiner")
    ckpts = root / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    write_demo_checkpoint(ckpts / "tiny-refiner.safetensors", "sdxl-refiner", seed=5)
    write_demo_checkpoint(ckpts / "other-sd.safetensors", "sd15", seed=7)
    write_demo_checkpoint(ckpts / "other-xl.safetensors", "sdxl", seed=9)
    return root


@pytest.fixture(scope="module")
def engine(data_dir: Path) -> Engine:
    eng = Engine(Settings(data_dir=data_dir))
    eng.load_model("demo")
    return eng


@pytest.fixture
def xl(engine: Engine) -> Engine:
    engine.load_model("demo-xl")
    return engine


@pytest.fixture
def sd(engine: Engine) -> Engine:
    engine.load_model("demo")
    return engine


# -- AND ---------------------------------------------------------------------------------

def test_split_and_follows_a1111() -> None:
    def parts(prompt: str) -> list[tuple[str, float]]:
        return [(text.strip(), weight) for text, weight in split_and(prompt)]  # spaces do not tokenize

    assert parts("a cat AND a dog:0.5") == [("a cat", 1.0), ("a dog", 0.5)]
    assert parts("landscape:1.2") == [("landscape", 1.2)]
    assert parts("a cat and a dog, ANDROID") == [("a cat and a dog, ANDROID", 1.0)]  # only the word AND
    assert parts("(red:1.3) AND blue : -0.5") == [("(red:1.3)", 1.0), ("blue", -0.5)]


def test_and_with_weight_zero_and_split_weights_equal_the_plain_prompt(sd: Engine) -> None:
    plain = sd.generate(req(prompt="a cat"))
    # uncond + cfg * (1 * (cat - uncond) + 0 * (dog - uncond)) is the plain guidance
    zero = sd.generate(req(prompt="a cat AND a dog:0"))
    # two halves of the same prompt add up to it
    halves = sd.generate(req(prompt="a cat:0.5 AND a cat:0.5"))
    explicit = sd.generate(req(prompt="a cat:1"))
    assert same(explicit.images[0], plain.images[0])  # one part at weight 1 is the plain prompt
    # the AND batch has more rows: float rounding may move a pixel by 1-2/255
    assert same(zero.images[0], plain.images[0], 2) and same(halves.images[0], plain.images[0], 2)
    assert parse_infotext(zero.infotexts[0])["Prompt"] == "a cat AND a dog:0"  # written as given


def test_a_part_weight_scales_its_guidance(sd: Engine) -> None:
    # A1111 reads "a cat:0.5" as the prompt "a cat" at weight 0.5: half the CFG scale
    weighted = sd.generate(req(prompt="a cat:0.5", cfg_scale=7))
    half_cfg = sd.generate(req(prompt="a cat", cfg_scale=3.5))
    assert same(weighted.images[0], half_cfg.images[0], 2)


def test_and_weights_change_the_image(sd: Engine) -> None:
    plain = sd.generate(req(prompt="a cat"))
    light = sd.generate(req(prompt="a cat AND a dog:0.5"))
    heavy = sd.generate(req(prompt="a cat AND a dog:1.5"))
    again = sd.generate(req(prompt="a cat AND a dog:0.5"))
    assert not same(light.images[0], plain.images[0], 2)
    assert not same(light.images[0], heavy.images[0], 2)
    assert same(light.images[0], again.images[0])


def test_and_on_sdxl_and_with_cfg_1(xl: Engine) -> None:
    r = xl.generate(req(prompt="a cat AND a dog:0.7", cfg_scale=1))  # needs the negative rows even at CFG 1
    plain = xl.generate(req(prompt="a cat", cfg_scale=1))
    # (the tiny SDXL demo barely listens to its prompt: any change counts)
    assert r.images[0].size == (64, 64) and not same(r.images[0], plain.images[0])


def test_too_many_and_parts_is_a_bad_request(sd: Engine) -> None:
    with pytest.raises(BadRequest, match="AND parts"):
        sd.generate(req(prompt=" AND ".join(["x"] * 40)))


# -- refiner -------------------------------------------------------------------------------

def test_refiner_switch_at_1_is_no_refiner(xl: Engine) -> None:
    base = xl.generate(req())
    never = xl.generate(req(refiner_checkpoint="tiny-refiner", refiner_switch_at=1.0))
    assert same(base.images[0], never.images[0])
    assert "Refiner" not in parse_infotext(never.infotexts[0]) or \
        parse_infotext(never.infotexts[0]).get("Refiner") is None


def test_refiner_switches_and_writes_the_infotext(xl: Engine) -> None:
    base = xl.generate(req(steps=4))
    half = xl.generate(req(steps=4, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5))
    early = xl.generate(req(steps=4, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.0))
    assert not same(base.images[0], half.images[0], 2)
    assert not same(half.images[0], early.images[0], 2)
    parsed = parse_infotext(half.infotexts[0])
    sha = xl.hashes.get(xl.settings.checkpoints_path / "tiny-refiner.safetensors").sha256
    assert parsed["Refiner"] == f"tiny-refiner [{sha[:10]}]"
    assert parsed["Refiner switch at"] == "0.5"
    assert "Refiner switch by sampling steps" not in half.infotexts[0]
    fields = infotext_to_request_fields(parsed)  # PNG Info -> the request fields again
    assert fields["refiner_checkpoint"] == f"tiny-refiner [{sha[:10]}]" and fields["refiner_switch_at"] == 0.5
    again = xl.generate(req(steps=4, refiner_checkpoint=fields["refiner_checkpoint"],
                            refiner_switch_at=fields["refiner_switch_at"]))
    assert same(again.images[0], half.images[0])  # the pasted name finds the same refiner
    assert xl.current is not None and xl.current.name == "demo-xl"  # the main model stays loaded


def test_refiner_switch_by_sampling_steps(xl: Engine) -> None:
    # 4 Euler steps at timesteps 751, 501, 251, 1: by timestep ((999 - t) / 1000) 0.4 is reached at
    # the second step, by steps (done / 4) at the third
    by_t = xl.generate(req(steps=4, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.4))
    by_steps = xl.generate(req(steps=4, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.4,
                               refiner_switch_by_sample_steps=True))
    assert "Refiner switch by sampling steps: True" in by_steps.infotexts[0]
    assert not same(by_t.images[0], by_steps.images[0], 2)


def test_any_checkpoint_can_refine_and_batches_keep_their_seeds(xl: Engine) -> None:
    r = xl.generate(req(batch_size=2, refiner_checkpoint="other-xl", refiner_switch_at=0.4))
    alone = xl.generate(req(seed=43, refiner_checkpoint="other-xl", refiner_switch_at=0.4))
    assert same(r.images[1], alone.images[0], 2)
    assert parse_infotext(r.infotexts[0])["Refiner"].startswith("other-xl [")


def test_refiner_stays_loaded_between_requests_until_another_is_named(xl: Engine) -> None:
    xl.generate(req(refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5))
    loaded = xl.extra_model("tiny-refiner")
    xl.generate(req())  # a request without a refiner (an X/Y/Z "None" cell) does not unload it
    assert xl.extra_model("tiny-refiner") is loaded
    xl.generate(req(refiner_checkpoint="other-xl", refiner_switch_at=0.5))  # another one frees it
    assert "tiny-refiner" not in xl._extra and "other-xl" in xl._extra


def test_refiner_in_hires_passes(xl: Engine) -> None:
    hires = dict(enable_hr=True, hr_scale=1.5, denoising_strength=0.6, hr_second_pass_steps=3)
    plain = xl.generate(req(**hires))
    second = xl.generate(req(**hires, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5))
    first = xl.generate(req(**hires, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5,
                            hires_fix_refiner_pass="first pass"))
    assert not same(plain.images[0], second.images[0], 2) and not same(first.images[0], second.images[0], 2)
    assert "Hires refiner" not in second.infotexts[0]  # A1111's default, "second pass", is not written
    assert parse_infotext(first.infotexts[0])["Hires refiner"] == "first pass"
    assert first.images[0].size == (96, 96)


def test_refiner_checkpoint_errors(xl: Engine) -> None:
    with pytest.raises(BadRequest, match="refiner_switch_at"):
        xl.generate(req(refiner_checkpoint="tiny-refiner", refiner_switch_at=1.5))
    with pytest.raises(Unsupported, match="refiner"):
        xl.load_model("tiny-refiner")  # a refiner is not a main model
    assert xl.current is not None


# -- hires checkpoint / sampler / schedule / prompt ------------------------------------------

HIRES = dict(enable_hr=True, hr_scale=1.5, denoising_strength=0.6, hr_second_pass_steps=2)


def test_hires_checkpoint_runs_the_second_pass(sd: Engine) -> None:
    plain = sd.generate(req(**HIRES))
    other = sd.generate(req(**HIRES, hr_checkpoint_name="other-sd"))
    same_model = sd.generate(req(**HIRES, hr_checkpoint_name="demo"))
    assert not same(plain.images[0], other.images[0], 2)
    assert same(plain.images[0], same_model.images[0])
    sha = sd.hashes.get(sd.settings.checkpoints_path / "other-sd.safetensors").sha256
    parsed = parse_infotext(other.infotexts[0])
    assert parsed["Hires checkpoint"] == f"other-sd [{sha[:10]}]"
    assert infotext_to_request_fields(parsed)["hr_checkpoint_name"] == f"other-sd [{sha[:10]}]"
    assert other.images[0].size == (96, 96) and sd.current is not None and sd.current.name == "demo"


def test_hires_prompt_is_used_in_the_second_pass_only(sd: Engine) -> None:
    plain = sd.generate(req(**HIRES))
    dog = sd.generate(req(**HIRES, hr_prompt="a dog", hr_negative_prompt="sharp"))
    same_text = sd.generate(req(**HIRES, hr_prompt="a cat in a hat"))
    assert not same(plain.images[0], dog.images[0], 2)
    assert same(plain.images[0], same_text.images[0])
    parsed = parse_infotext(dog.infotexts[0])
    assert parsed["Hires prompt"] == "a dog" and parsed["Hires negative prompt"] == "sharp"
    assert "Hires prompt" not in same_text.infotexts[0]  # A1111 writes it only when it differs
    # the first pass is untouched: without hires the two requests are the same image
    first_a = sd.generate(req(hr_prompt="a dog"))
    first_b = sd.generate(req())
    assert same(first_a.images[0], first_b.images[0])


def test_hires_sampler_and_schedule(sd: Engine) -> None:
    plain = sd.generate(req(**HIRES))
    sampler = sd.generate(req(**HIRES, hr_sampler_name="DPM++ 2M", hr_scheduler="Karras"))
    schedule = sd.generate(req(**HIRES, hr_scheduler="Karras"))  # the first pass's sampler, another schedule
    assert not same(plain.images[0], sampler.images[0], 2) and not same(plain.images[0], schedule.images[0], 2)
    p = parse_infotext(sampler.infotexts[0])
    assert (p["Hires sampler"], p["Hires schedule type"]) == ("DPM++ 2M", "Karras")
    assert parse_infotext(schedule.infotexts[0])["Hires schedule type"] == "Karras"


# -- GPU memory rule ---------------------------------------------------------------------------

class _Ctx:
    def __init__(self, resident: bool) -> None:
        self.pipe = torch.nn.Module()
        self.pipe.unet = torch.nn.Linear(4, 4)
        self.resident = resident


def test_residency_parks_the_other_model_only_when_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # no GPU here: the free-memory query and the moves are recorded instead (the rule is the test)
    moves: list[tuple[object, str]] = []
    monkeypatch.setattr(residency, "place", lambda pipe, device: moves.append((pipe, str(device))))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    main, refiner = _Ctx(True), _Ctx(False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 * 2**30, 80 * 2**30))
    assert residency.make_resident(refiner, [main], torch.device("cuda")) is False
    assert main.resident and refiner.resident and moves == [(refiner.pipe, "cuda")]
    moves.clear()
    refiner.resident = False
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 80 * 2**30))
    assert residency.make_resident(refiner, [main], torch.device("cuda")) is True
    assert not main.resident and refiner.resident
    assert moves == [(main.pipe, "cpu"), (refiner.pipe, "cuda")]


# -- sampler parameters (A1111's sigma tweaks, NGMS, Skip Early CFG, schedule range) ------------

def test_sigma_churn_where_the_sampler_takes_it(sd: Engine) -> None:
    plain = sd.generate(req())
    churn = sd.generate(req(s_churn=1.0, s_noise=1.0))
    assert not same(plain.images[0], churn.images[0], 2)
    assert parse_infotext(churn.infotexts[0])["Sigma churn"] == "1"  # whole numbers as A1111 writes them
    # DPM++ 2M (k-diffusion's sample_dpmpp_2m) takes no churn: nothing changes, nothing is written
    dpm = sd.generate(req(sampler_name="DPM++ 2M"))
    dpm_churn = sd.generate(req(sampler_name="DPM++ 2M", s_churn=1.0))
    assert same(dpm.images[0], dpm_churn.images[0]) and "Sigma churn" not in dpm_churn.infotexts[0]
    assert infotext_to_request_fields(parse_infotext(churn.infotexts[0]))["s_churn"] == 1.0


def wide(**kw: object) -> GenerationRequest:
    # one row a step (no negative prompt) on the tiny SD demo needs more than 64x64: its last level is 1x1
    return req(width=128, **kw)


def test_skip_early_cfg_and_ngms_drop_the_negative_prompt(sd: Engine) -> None:
    no_cfg = sd.generate(wide(cfg_scale=1))
    skip_all = sd.generate(wide(skip_early_cond=1.0))  # the whole sampling without the negative prompt
    ngms_all = sd.generate(wide(s_min_uncond=50.0, s_min_uncond_all=True))  # every sigma is below 50
    assert same(skip_all.images[0], no_cfg.images[0]) and same(ngms_all.images[0], no_cfg.images[0])
    assert parse_infotext(skip_all.infotexts[0])["Skip Early CFG"] == "1"
    parsed = parse_infotext(ngms_all.infotexts[0])
    assert parsed["NGMS"] == "50" and parsed["NGMS all steps"] == "True"
    half = sd.generate(wide(steps=4, skip_early_cond=0.3))  # only the first calls
    plain = sd.generate(wide(steps=4))
    assert not same(half.images[0], plain.images[0], 2) and not same(half.images[0], no_cfg.images[0], 2)


def test_schedule_sigma_range_and_rho(sd: Engine) -> None:
    karras = sd.generate(req(scheduler="Karras"))
    rho = sd.generate(req(scheduler="Karras", rho=3.0))
    top = sd.generate(req(scheduler="Karras", sigma_max=5.0))
    assert not same(karras.images[0], rho.images[0], 2) and not same(karras.images[0], top.images[0], 2)
    assert parse_infotext(rho.infotexts[0])["Schedule rho"] == "3"
    assert parse_infotext(top.infotexts[0])["Schedule max sigma"] == "5"
    discard = sd.generate(req(scheduler="Karras", always_discard_next_to_last_sigma=True))
    assert not same(karras.images[0], discard.images[0], 2)
    assert parse_infotext(discard.infotexts[0])["Discard penultimate sigma"] == "True"
    # a schedule diffusers lays out itself (Uniform) has no sigma list to change: as in A1111
    uniform = sd.generate(req(scheduler="Uniform"))
    uniform_rho = sd.generate(req(scheduler="Uniform", rho=3.0))
    assert same(uniform.images[0], uniform_rho.images[0]) and "Schedule rho" not in uniform_rho.infotexts[0]


# -- sdcloud generate ---------------------------------------------------------------------------

def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data_dir), "generate", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_refiner_and_hires_flags(data_dir: Path) -> None:
    r = _cli(data_dir, "a cat", "--model", "demo-xl", "--steps", "3", "--size", "64x64", "--seed", "5",
             "--refiner", "tiny-refiner", "--refiner-switch-at", "0.5", "--hires", "--hr-scale", "1.5",
             "--hr-steps", "2", "--hr-prompt", "a dog", "--hr-sampler", "Euler", "--hr-checkpoint", "other-xl")
    assert r.returncode == 0, r.stderr
    with Image.open(r.stdout.split()[0]) as im:
        parsed = parse_infotext(im.info["parameters"])
    assert parsed["Refiner"].startswith("tiny-refiner [") and parsed["Refiner switch at"] == "0.5"
    assert parsed["Hires checkpoint"].startswith("other-xl [") and parsed["Hires prompt"] == "a dog"
    assert parsed["Hires sampler"] == "Euler"  # the CLI default sampler is DPM++ 2M
    bad = _cli(data_dir, "a cat", "--model", "demo-xl", "--steps", "2", "--size", "64x64", "--refiner", "missing")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "checkpoint 'missing' not found" in bad.stderr and "loading model" not in bad.stderr  # before any load


def test_refiner_in_img2img_and_inpaint(engine: Engine) -> None:
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    engine.load_model("demo")
    plain = engine.generate(req(init_images=[init], denoising_strength=0.6))
    refined = engine.generate(req(init_images=[init], denoising_strength=0.6, refiner_checkpoint="other-sd",
                                  refiner_switch_at=0.5))
    assert not same(plain.images[0], refined.images[0], 2) and "Refiner: other-sd [" in refined.infotexts[0]
    # a 9-channel inpainting model refined by an ordinary one: after the switch the mask is kept by
    # blending (the refiner's UNet takes no mask channels), and the area outside is the original
    engine.load_model("demo-inpaint")
    inpainted = engine.generate(req(init_images=[init], mask=mask, mask_blur=0, inpainting_fill=1,
                                    denoising_strength=0.8, refiner_checkpoint="other-sd", refiner_switch_at=0.5))
    out = arr(inpainted.images[0])
    assert "Refiner: other-sd [" in inpainted.infotexts[0]
    assert np.abs(out[:8, :8] - np.array([200, 40, 40])).max() <= 2  # outside the mask: untouched
    assert np.abs(out[24:40, 24:40] - np.array([200, 40, 40])).max() > 10  # inside: repainted
