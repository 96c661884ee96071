"""Sampler behaviour A1111 users rely on, on the demo model at 64x64: per-image step noise for
ancestral and SDE samplers (image i of a batch = seed+i alone), the sigma-list schedule types
(Karras, Exponential, Polyexponential, KL Optimal, Align Your Steps) and A1111's img2img / hires
step counts."""

from __future__ import annotations

import math
import re

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from sdcloud.engine.demo import SCHEDULER
from sdcloud.engine.engine import Engine
from sdcloud.engine.kdiffusion_schedulers import DPMPP2SAncestralScheduler, RestartScheduler
from sdcloud.engine.sampler_names import (
    build_scheduler,
    custom_sigma_samplers,
    resolve_sampler,
    scheduler_list,
    set_timesteps,
)
from sdcloud.engine.sigmas import schedule_sigmas
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest
from test_engine_generate import arr
from test_engine_generate import req as base_req

SD_SIGMA_MIN, SD_SIGMA_MAX = 0.0291675, 14.614647  # SD 1.x/XL scaled_linear betas, k-diffusion model sigmas


def req(**kw: object) -> GenerationRequest:
    """The engine tests' request, with an ancestral sampler by default."""
    return base_req(**{"sampler_name": "Euler a", **kw})


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(arr(a) - arr(b)).max())


# -- per-image step noise ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2S a"])
def test_batch_image_equals_its_seed_alone(engine: Engine, name: str) -> None:
    batch = engine.generate(req(sampler_name=name, batch_size=2))
    alone = [engine.generate(req(sampler_name=name, seed=42 + i)) for i in range(2)]
    # batched float math may round a pixel differently (as for Euler in test_engine_generate): allow 2/255
    for i in range(2):
        assert max_diff(batch.images[i], alone[i].images[0]) <= 2, f"image {i} of the batch"
    assert max_diff(batch.images[0], batch.images[1]) > 20
    again = engine.generate(req(sampler_name=name, seed=42))
    assert np.array_equal(arr(again.images[0]), arr(alone[0].images[0]))  # same seed, same image (SDE too)


def test_img2img_and_hires_batches_match_alone_with_euler_a(engine: Engine) -> None:
    init = Image.new("RGB", (64, 64), (200, 80, 40))
    i2i = dict(init_images=[init], denoising_strength=0.6, steps=4)
    batch = engine.generate(req(batch_size=2, **i2i))
    alone = engine.generate(req(seed=43, **i2i))
    assert max_diff(batch.images[1], alone.images[0]) <= 2
    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.6, steps=2)
    batch = engine.generate(req(batch_size=2, **hires))
    alone = engine.generate(req(seed=43, **hires))
    assert batch.images[1].size == (96, 96)
    assert max_diff(batch.images[1], alone.images[0]) <= 2


# -- sigma-list schedule types ------------------------------------------------------------------

def test_polyexponential_sigmas() -> None:
    s = schedule_sigmas("Polyexponential", 4, SD_SIGMA_MIN, SD_SIGMA_MAX).tolist()
    # rho 1: geometric from sigma_max down to sigma_min, then 0
    ratio = (SD_SIGMA_MIN / SD_SIGMA_MAX) ** (1 / 3)
    expected = [SD_SIGMA_MAX * ratio ** i for i in range(4)] + [0.0]
    assert s == pytest.approx(expected, rel=1e-5)
    assert s[1] == pytest.approx(1.84003, abs=1e-4) and s[2] == pytest.approx(0.231666, abs=1e-5)


def test_kl_optimal_sigmas() -> None:
    s = schedule_sigmas("KL Optimal", 4, SD_SIGMA_MIN, SD_SIGMA_MAX).tolist()
    a_max, a_min = math.atan(SD_SIGMA_MAX), math.atan(SD_SIGMA_MIN)
    expected = [math.tan(a_max + (a_min - a_max) * i / 4) for i in range(5)]
    assert s == pytest.approx(expected, rel=1e-5)
    # A1111 1.10 ends this schedule at sigma_min, not 0
    assert s[0] == pytest.approx(SD_SIGMA_MAX, rel=1e-5) and s[-1] == pytest.approx(SD_SIGMA_MIN, rel=1e-5)
    assert s[2] == pytest.approx(0.96159, abs=1e-4)


def test_align_your_steps_sigmas() -> None:
    sd = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
    xl = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
    # 11 steps: NVIDIA's table as is, then 0 (A1111 interpolates for any other count)
    assert schedule_sigmas("Align Your Steps", 11, 0, 0).tolist() == pytest.approx(sd + [0.0], rel=1e-6)
    assert schedule_sigmas("Align Your Steps", 11, 0, 0, is_xl=True).tolist() == pytest.approx(xl + [0.0], rel=1e-6)
    # 6 steps: the log-linear interpolation lands exactly on every second table entry
    assert schedule_sigmas("Align Your Steps", 6, 0, 0).tolist() == pytest.approx(sd[::2] + [0.0], rel=1e-5)
    # 3 steps: midpoint of the table in log space = the 6th entry; 10 steps: geometric mean of neighbours
    assert schedule_sigmas("Align Your Steps", 3, 0, 0).tolist() == pytest.approx([14.615, 1.396, 0.029, 0.0],
                                                                                  rel=1e-5)
    ten = schedule_sigmas("Align Your Steps", 10, 0, 0).tolist()
    assert len(ten) == 11 and ten[-1] == 0.0
    # x = 1/9 lies between table points 1 and 2 (0.1, 0.2) at weight 1/9: log-linear blend
    expected = math.exp(math.log(6.475) + (math.log(3.861) - math.log(6.475)) * (1 / 9 - 0.1) / 0.1)
    assert ten[1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "LMS", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 3M SDE"])
@pytest.mark.parametrize("schedule", ["Polyexponential", "KL Optimal", "Align Your Steps"])
def test_schedulers_run_on_the_computed_sigmas(sampler: str, schedule: str) -> None:
    name, label = resolve_sampler(sampler, schedule)
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 5, "cpu")
    want = schedule_sigmas(label, 5, SD_SIGMA_MIN, SD_SIGMA_MAX)
    if sampler == "DPM++ 3M SDE":  # A1111 discards the next-to-last sigma for it (one extra step computed)
        full = schedule_sigmas(label, 6, SD_SIGMA_MIN, SD_SIGMA_MAX)
        want = torch.cat([full[:-2], full[-1:]])
    assert sched.sigmas.tolist() == pytest.approx(want.tolist(), rel=1e-4)
    t = sched.timesteps.tolist()
    assert len(t) == 5 and t == sorted(t, reverse=True) and 999 >= t[0] > t[-1] >= 0
    # rho 1 spans the model's whole sigma range: the first and the last training step
    if label == "Polyexponential" and sampler != "DPM++ 3M SDE":
        assert t[0] == pytest.approx(999, abs=0.01) and t[-1] == pytest.approx(0, abs=0.01)


def test_schedule_types_listed_and_unsupported_pairs_are_clear_errors() -> None:
    labels = {s["label"] for s in scheduler_list()}
    assert {"Polyexponential", "KL Optimal", "Align Your Steps"} <= labels
    assert custom_sigma_samplers() == ["DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a",
                                       "DPM++ 3M SDE", "Euler a", "Euler", "LMS", "Restart"]
    assert resolve_sampler("Euler", "kl_optimal") == ("Euler", "KL Optimal")
    assert resolve_sampler("DPM++ 2M Align Your Steps") == ("DPM++ 2M", "Align Your Steps")
    for sampler in ("Heun", "DPM2", "DPM++ SDE", "DDIM", "UniPC"):
        with pytest.raises(BadRequest, match=re.escape(f"with sampler '{sampler}'; it works with: DPM++ 2M, ")):
            resolve_sampler(sampler, "Align Your Steps")


@pytest.mark.parametrize("schedule", ["Polyexponential", "KL Optimal", "Align Your Steps"])
def test_generation_with_each_schedule_differs_from_automatic(engine: Engine, schedule: str) -> None:
    # Euler's Automatic is diffusers' "leading" timesteps (from t 667 at 3 steps), the others start at sigma_max
    # 14.61; on the random demo model that start dominates the image (Karras is as close to these as they are
    # to each other, so it cannot serve as the contrast)
    auto = engine.generate(req(sampler_name="Euler", scheduler="Automatic"))
    r = engine.generate(req(sampler_name="Euler", scheduler=schedule, batch_size=2))
    assert max_diff(r.images[0], auto.images[0]) > 20
    assert f"Sampler: Euler, Schedule type: {schedule}," in r.infotexts[0]
    alone = engine.generate(req(sampler_name="Euler", scheduler=schedule, seed=43))
    assert max_diff(r.images[1], alone.images[0]) <= 2


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
def test_polyexponential_equals_exponential(engine: Engine, sampler: str) -> None:
    # rho 1 makes Polyexponential the same formula as Exponential (two branches of schedule_sigmas)
    poly = engine.generate(req(sampler_name=sampler, scheduler="Polyexponential"))
    expo = engine.generate(req(sampler_name=sampler, scheduler="Exponential"))
    assert max_diff(poly.images[0], expo.images[0]) <= 2


@pytest.mark.parametrize("schedule,flag", [("Karras", "use_karras_sigmas"), ("Exponential", "use_exponential_sigmas")])
def test_our_lists_equal_diffusers_formulas_over_the_full_range(schedule: str, flag: str) -> None:
    # diffusers' Euler computes the same formulas itself when its timesteps span 999..0 (linspace spacing),
    # with unrounded timesteps: an independent check of our sigmas and of our sigma -> timestep mapping
    ref = diffusers.EulerDiscreteScheduler.from_config(dict(SCHEDULER), **{flag: True}, timestep_spacing="linspace")
    ref.set_timesteps(7)
    name, label = resolve_sampler("Euler", schedule)
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 7, "cpu")
    assert sched.sigmas.tolist() == pytest.approx(ref.sigmas.tolist(), rel=1e-4)
    assert sched.timesteps.tolist() == pytest.approx(ref.timesteps.tolist(), abs=1e-2)


# -- Karras / Exponential as A1111 computes them -----------------------------------------------------

def _model_sigmas() -> np.ndarray:
    """k-diffusion's model sigmas for SD's scaled_linear betas 0.00085..0.012, by training step."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    alphas = np.cumprod(1 - betas)
    return ((1 - alphas) / alphas) ** 0.5


def _kdiffusion(schedule: str, n: int) -> list[float]:
    """k-diffusion get_sigmas_karras (rho 7) / get_sigmas_exponential from sigma_max down to sigma_min, then 0."""
    lo, hi = _model_sigmas()[0], _model_sigmas()[-1]
    ramp = np.linspace(0, 1, n)
    if schedule == "Karras":
        sigmas = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    else:
        sigmas = np.exp(np.log(hi) + ramp * (np.log(lo) - np.log(hi)))
    return [*sigmas.tolist(), 0.0]


def _sigma_at(t: float) -> float:
    """The model sigma of a (fractional) timestep: k-diffusion's t_to_sigma."""
    return math.exp(np.interp(t, np.arange(1000), np.log(_model_sigmas())))


def test_model_sigma_range_is_a1111s() -> None:
    s = _model_sigmas()
    assert s[-1] == pytest.approx(14.6146, abs=1e-4) and s[0] == pytest.approx(0.0292, abs=1e-4)


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler", "LMS", "DPM++ 2M SDE", "Euler a"])
@pytest.mark.parametrize("schedule", ["Karras", "Exponential"])
def test_karras_and_exponential_sigmas_are_kdiffusions(sampler: str, schedule: str) -> None:
    # diffusers' own use_karras_sigmas started Euler/LMS at sigma 11.03 (the first "leading" timestep, 951)
    # and rounded DPM++ 2M's timesteps; A1111 spans the model's whole range with fractional timesteps
    name, label = resolve_sampler(sampler, schedule)
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 20, "cpu")
    want = _kdiffusion(schedule, 20)
    assert sched.sigmas.tolist() == pytest.approx(want, abs=1e-4)
    assert sched.sigmas[0].item() == pytest.approx(14.6146, abs=1e-4)
    assert sched.sigmas[-2].item() == pytest.approx(0.0292, abs=1e-4)
    t = sched.timesteps.tolist()
    assert len(t) == 20 and t[0] == pytest.approx(999, abs=1e-3)
    assert [_sigma_at(x) for x in t] == pytest.approx(want[:-1], rel=1e-4)


def test_dpmpp_2m_karras_default_sigmas_and_generation(engine: Engine) -> None:
    # A1111's default sampler: DPM++ 2M, Automatic = Karras
    name, label = resolve_sampler("DPM++ 2M", "Automatic")
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 20, "cpu")
    assert sched.sigmas.tolist() == pytest.approx(_kdiffusion("Karras", 20), abs=1e-4)
    assert sched.sigmas[1].item() == pytest.approx(11.7254, abs=1e-3)  # diffusers' flag gave 11.72 after 14.61,
    auto = engine.generate(req(sampler_name="DPM++ 2M", steps=20))    # but on rounded timesteps 999, 962, 921
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in auto.infotexts[0]
    legacy = engine.generate(req(sampler_name="DPM++ 2M Karras", steps=20))
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in legacy.infotexts[0]
    assert np.array_equal(arr(auto.images[0]), arr(legacy.images[0]))
    assert arr(auto.images[0]).std() > 5  # a real image came out, not a blank


def test_dpmpp_3m_sde_karras_discards_the_next_to_last_sigma() -> None:
    name, label = resolve_sampler("DPM++ 3M SDE", "Karras")
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 20, "cpu")
    full = _kdiffusion("Karras", 21)
    assert sched.sigmas.tolist() == pytest.approx(full[:-2] + full[-1:], abs=1e-4)


@pytest.mark.parametrize("sampler", ["Heun", "DPM2", "DPM++ SDE"])
def test_flag_only_samplers_span_the_model_sigma_range(sampler: str) -> None:
    # no sigma list here (two model calls a step): diffusers' Karras flag, over the model's whole range
    name, label = resolve_sampler(sampler, "Karras")
    sched = build_scheduler(name, label, dict(SCHEDULER))
    set_timesteps(sched, name, label, 20, "cpu")
    # was 11.03, 8.98 (Karras from the first "leading" timestep, 951)
    assert sched.sigmas[:2].tolist() == pytest.approx(_kdiffusion("Karras", 20)[:2], abs=1e-3)
    if sampler != "DPM2":  # DPM2 steps to 0 through interpolated sigmas instead
        assert sched.sigmas[sched.sigmas > 0].min().item() == pytest.approx(0.0292, abs=1e-4)


def test_euler_a_takes_karras_and_exponential(engine: Engine) -> None:
    # diffusers' EulerAncestralDiscreteScheduler has no Karras/Exponential flag: the sigma list is ours
    auto = engine.generate(req(scheduler="Automatic"))
    for schedule in ("Karras", "Exponential"):
        r = engine.generate(req(scheduler=schedule))
        assert max_diff(r.images[0], auto.images[0]) > 20
        assert f"Sampler: Euler a, Schedule type: {schedule}," in r.infotexts[0]


def test_bad_schedule_pair_is_rejected_before_work(engine: Engine) -> None:
    with pytest.raises(BadRequest, match="'KL Optimal' is not available with sampler 'Heun'"):
        engine.generate(req(sampler_name="Heun", scheduler="KL Optimal"))


# -- DPM++ 2S a -------------------------------------------------------------------------------------

def _toy_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return 0.8 * torch.tanh(x / (1 + sigma)) + 0.1 * sigma.sqrt()


def _kdiffusion_2s_a(x: torch.Tensor, sigmas: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_2s_ancestral (eta 1), written out, with per-image noise."""
    for i in range(len(sigmas) - 1):
        denoised = _toy_denoiser(x, sigmas[i])
        s_from, s_to = sigmas[i], sigmas[i + 1]
        up = min(s_to, (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)
        down = (s_to ** 2 - up ** 2) ** 0.5
        if down == 0:
            x = x + (x - denoised) / s_from * (down - s_from)
        else:
            t, t_next = s_from.log().neg(), down.log().neg()
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / t.neg().exp()) * x - (-h / 2).expm1() * denoised
            denoised_2 = _toy_denoiser(x_2, s.neg().exp())
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_2
        if s_to > 0:
            x = x + torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in gens]) * up
    return x


@pytest.mark.parametrize("schedule", ["Karras", "KL Optimal"])
def test_dpmpp_2s_a_steps_are_kdiffusions(schedule: str) -> None:
    name, label = resolve_sampler("DPM++ 2S a", schedule)
    sched = build_scheduler(name, label, dict(SCHEDULER))
    assert isinstance(sched, DPMPP2SAncestralScheduler)
    set_timesteps(sched, name, label, 4, "cpu")
    sigmas = schedule_sigmas(label, 4, SD_SIGMA_MIN, SD_SIGMA_MAX)
    assert sched.sigmas.tolist() == pytest.approx(sigmas.tolist(), rel=1e-5)
    # two model calls a step, one for a last step that ends at 0 (Karras; KL Optimal ends at sigma_min)
    assert len(sched.timesteps) == (7 if schedule == "Karras" else 8)
    start = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    x = _run_toy(sched, start)
    ref_gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    ref = _kdiffusion_2s_a(start * sigmas[0], sigmas, ref_gens)
    assert torch.allclose(x, ref, atol=1e-4), (x - ref).abs().max()


def _run_toy(sched: object, start: torch.Tensor) -> torch.Tensor:
    """Drive a scheduler as Sampler.run_pass does, with an epsilon "model" built on _toy_denoiser."""
    alphas = sched.alphas_cumprod.float()  # type: ignore[attr-defined]
    log_sigmas = (((1 - alphas) / alphas) ** 0.5).log().double().numpy()
    x = start * sched.init_noise_sigma  # type: ignore[attr-defined]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    for t in sched.timesteps:  # type: ignore[attr-defined]
        sigma = torch.tensor(math.exp(np.interp(float(t), np.arange(len(log_sigmas)), log_sigmas)))
        x_in = sched.scale_model_input(x, t) * (sigma ** 2 + 1) ** 0.5  # type: ignore[attr-defined]
        eps = (x_in - _toy_denoiser(x_in, sigma)) / sigma
        x = sched.step(eps, t, x, generator=gens).prev_sample  # type: ignore[attr-defined]
    return x


def _karras(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    sigmas = (sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _a1111_restart(x: torch.Tensor, sigmas: torch.Tensor, gens: list[torch.Generator]) -> tuple[torch.Tensor, int]:
    """A1111's sd_samplers_extra.restart_sampler (automatic restart list), written out."""
    calls = 0

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return _toy_denoiser(x, sigma)

    def heun_step(x: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        d = (x - model(x, old)) / old
        if new == 0:
            return x + d * (new - old)
        x_2 = x + d * (new - old)
        d_2 = (x_2 - model(x_2, new)) / new
        return x + (d + d_2) / 2 * (new - old)

    steps = len(sigmas) - 1
    restart_list: dict[float, list[float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = _karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            r_steps, r_times, r_max = by_index[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - r_max), dim=0))
            if max_idx < min_idx:
                s_restart = _karras(int(r_steps), sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                for _ in range(int(r_times)):
                    step_list.extend(zip(s_restart[:-1], s_restart[1:], strict=True))
    last = None
    for old, new in step_list:
        if last is None:
            last = old
        elif last < old:
            noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in gens])
            x = x + noise * (old ** 2 - last ** 2) ** 0.5
        x = heun_step(x, old, new)
        last = new
    return x, calls


def test_restart_generates_with_per_image_noise(engine: Engine) -> None:
    # 20 steps: 11 Karras steps with one restart (9 more Heun steps from sigma 2, after fresh noise)
    batch = engine.generate(req(sampler_name="Restart", steps=20, batch_size=2))
    assert "Sampler: Restart, Schedule type: Karras," in batch.infotexts[0]
    alone = engine.generate(req(sampler_name="Restart", steps=20, seed=43))
    assert max_diff(batch.images[1], alone.images[0]) <= 2
    heun = engine.generate(req(sampler_name="Heun", scheduler="Karras", steps=20))
    assert max_diff(batch.images[0], heun.images[0]) > 10
    init = Image.new("RGB", (64, 64), (200, 80, 40))
    i2i = engine.generate(req(sampler_name="Restart", steps=4, init_images=[init], denoising_strength=0.5))
    assert max_diff(i2i.images[0], init) > 5


@pytest.mark.parametrize("steps", [6, 22, 40])  # plain Heun; one restart; two restarts
def test_restart_is_a1111s(steps: int) -> None:
    name, label = resolve_sampler("Restart", "Automatic")
    sched = build_scheduler(name, label, dict(SCHEDULER))
    assert isinstance(sched, RestartScheduler)
    set_timesteps(sched, name, label, steps, "cpu")
    start = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    x = _run_toy(sched, start)
    sigmas = schedule_sigmas("Karras", steps, SD_SIGMA_MIN, SD_SIGMA_MAX)
    ref, calls = _a1111_restart(start * sigmas[0], sigmas, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert len(sched.timesteps) == calls == 2 * steps - 1  # Heun steps add up to the requested steps
    assert torch.allclose(x, ref, atol=1e-4), (x - ref).abs().max()


def test_dpmpp_2s_a_generates_with_a1111_infotext(engine: Engine) -> None:
    r = engine.generate(req(sampler_name="DPM++ 2S a"))
    assert "Sampler: DPM++ 2S a, Schedule type: Karras," in r.infotexts[0]
    euler_a = engine.generate(req())
    assert max_diff(r.images[0], euler_a.images[0]) > 20
    kl = engine.generate(req(sampler_name="DPM++ 2S a", scheduler="KL Optimal"))
    assert "Sampler: DPM++ 2S a, Schedule type: KL Optimal," in kl.infotexts[0]
    init = Image.new("RGB", (64, 64), (200, 80, 40))
    i2i = dict(sampler_name="DPM++ 2S a", init_images=[init], denoising_strength=0.5, steps=4)
    batch = engine.generate(req(batch_size=2, **i2i))
    alone = engine.generate(req(seed=43, **i2i))
    assert max_diff(batch.images[1], alone.images[0]) <= 2
    with pytest.raises(BadRequest, match="'Uniform' is not available with sampler 'DPM\\+\\+ 2S a'; available: "
                                         "Automatic, Karras, Exponential"):
        resolve_sampler("DPM++ 2S a", "Uniform")


@pytest.mark.parametrize("name", ["Heun", "DPM2", "DPM++ SDE", "DPM++ 2S a", "Restart"])
def test_second_order_progress_counts_steps_not_model_calls(engine: Engine, name: str) -> None:
    seen: list[tuple[int, int]] = []
    engine.generate(req(sampler_name=name, steps=4), progress=lambda p: seen.append((p.step, p.steps)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    seen.clear()
    init = Image.new("RGB", (64, 64), (200, 80, 40))
    engine.generate(req(sampler_name=name, steps=4, init_images=[init], denoising_strength=0.5),
                    progress=lambda p: seen.append((p.step, p.steps)))
    assert seen == [(1, 3), (2, 3), (3, 3)]  # A1111: t_enc = int(0.5 * 4) = 2, t_enc + 1 steps


# -- img2img and hires step counts (A1111 setup_img2img_steps + sample_img2img) -------------------

class _Calls:
    """Records the timestep of every UNet call of a generation."""

    def __init__(self, engine: Engine) -> None:
        self.unet = engine._ctx.pipe.unet  # type: ignore[union-attr]
        self.t: list[float] = []

    def __enter__(self) -> _Calls:
        self.handle = self.unet.register_forward_pre_hook(
            lambda _m, args: self.t.append(float(torch.as_tensor(args[1]).reshape(-1)[0])))
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


_INIT = Image.new("RGB", (64, 64), (200, 80, 40))


@pytest.mark.parametrize("sampler,calls_per_step", [("DPM++ 2M", 1), ("Euler", 1), ("Heun", 2), ("DPM++ 2S a", 2)])
def test_img2img_runs_a1111s_steps_from_a1111s_sigma(engine: Engine, sampler: str, calls_per_step: int) -> None:
    # d 0.75, 20 steps: t_enc = int(0.75 * 20) = 15; A1111 computes the 20-step schedule and samples
    # sigmas[20 - 15 - 1:] = sigmas[4:]: 16 steps, the first from the 5th sigma (was 15 steps from the 6th)
    schedule = "Karras"
    seen: list[tuple[int, int]] = []
    with _Calls(engine) as calls:
        engine.generate(req(sampler_name=sampler, scheduler=schedule, steps=20, init_images=[_INIT],
                            denoising_strength=0.75), progress=lambda p: seen.append((p.step, p.steps)))
    assert seen == [(i, 16) for i in range(1, 17)]
    assert len(calls.t) == (16 if calls_per_step == 1 else 31)  # two calls a step, one for the last step to 0
    assert _sigma_at(calls.t[0]) == pytest.approx(_kdiffusion(schedule, 20)[4], rel=1e-3)  # 5.7894


def test_img2img_timestep_sampler_starts_at_the_same_step(engine: Engine) -> None:
    # DDIM runs on diffusers' 20 timesteps 951, 901, ... 1: A1111's offset gives 16 steps from 751
    with _Calls(engine) as calls:
        engine.generate(req(sampler_name="DDIM", steps=20, init_images=[_INIT], denoising_strength=0.75))
    assert calls.t == [751.0 - 50 * i for i in range(16)]


def test_img2img_at_strength_0_runs_one_step_at_the_smallest_sigma(engine: Engine) -> None:
    with _Calls(engine) as calls:  # A1111: t_enc = 0, sigmas[N - 1:] = [sigma_min, 0]
        engine.generate(req(sampler_name="DPM++ 2M", steps=5, init_images=[_INIT], denoising_strength=0.0))
    assert len(calls.t) == 1 and _sigma_at(calls.t[0]) == pytest.approx(0.0292, abs=1e-4)


@pytest.mark.parametrize("hr_steps,denoise,total,first", [(4, 0.5, 8, 4), (5, 0.7, 7, 2), (0, 0.75, 4, 1)])
def test_hires_pass_runs_hr_steps_of_a_longer_schedule(engine: Engine, hr_steps: int, denoise: float, total: int,
                                                       first: int) -> None:
    # A1111 passes the hires steps to sample_img2img: a schedule of int(hr_steps / d) steps, of which the
    # last hr_steps run (0 hires steps = the first pass's 3 steps)
    seen: list[tuple[int, int]] = []
    with _Calls(engine) as calls:
        r = engine.generate(req(sampler_name="DPM++ 2M", steps=3, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                hr_second_pass_steps=hr_steps, denoising_strength=denoise),
                            progress=lambda p: seen.append((p.step, p.steps)))
    runs = hr_steps or 3
    assert r.images[0].size == (96, 96)
    assert seen == [(i, 3 + runs) for i in range(1, 4 + runs)]
    hires = calls.t[3:]
    assert len(hires) == runs
    assert [_sigma_at(t) for t in hires] == pytest.approx(_kdiffusion("Karras", total)[first:-1], rel=1e-3)


@pytest.mark.parametrize("sampler,denoise", [("DPM++ 2M", 0.001), ("DDIM", 0.001), ("Euler a", 1e-300)])
def test_hires_at_tiny_strength_stays_within_the_training_steps(engine: Engine, sampler: str, denoise: float) -> None:
    # int(2 / 0.001) = 2000 schedule steps (2 / 1e-300 would not fit in memory): capped at 1000, the last 2 run
    with _Calls(engine) as calls:
        r = engine.generate(req(sampler_name=sampler, steps=2, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                hr_second_pass_steps=2, denoising_strength=denoise))
    assert r.images[0].size == (96, 96)
    assert len(calls.t) == 4 and all(0 <= t < 5 for t in calls.t[2:])
