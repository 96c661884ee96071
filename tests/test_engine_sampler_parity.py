"""Sampler behaviour A1111 users rely on, on the demo model at 64x64: per-image step noise for
ancestral and SDE samplers (image i of a batch = seed+i alone) and the sigma-list schedule types
(Polyexponential, KL Optimal, Align Your Steps)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sdcloud.engine.demo import SCHEDULER
from sdcloud.engine.engine import Engine
from sdcloud.engine.samplers import (
    DPMPP2SAncestralScheduler,
    RestartScheduler,
    build_scheduler,
    custom_sigma_samplers,
    resolve_sampler,
    schedule_sigmas,
    scheduler_list,
    set_timesteps,
)
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest
from sdcloud.settings import Settings

SD_SIGMA_MIN, SD_SIGMA_MAX = 0.0291675, 14.614647  # SD 1.x/XL scaled_linear betas, k-diffusion model sigmas


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    eng = Engine(Settings(data_dir=tmp_path_factory.mktemp("engine")))
    eng.load_model("demo")
    return eng


def req(**kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a cat in a hat", negative_prompt="blurry", width=64, height=64,
                                   steps=3, seed=42, sampler_name="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


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
def test_generation_with_each_schedule_differs_from_karras(engine: Engine, schedule: str) -> None:
    karras = engine.generate(req(sampler_name="Euler", scheduler="Karras"))
    r = engine.generate(req(sampler_name="Euler", scheduler=schedule, batch_size=2))
    assert max_diff(r.images[0], karras.images[0]) > 20
    assert f"Sampler: Euler, Schedule type: {schedule}," in r.infotexts[0]
    alone = engine.generate(req(sampler_name="Euler", scheduler=schedule, seed=43))
    assert max_diff(r.images[1], alone.images[0]) <= 2


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
def test_polyexponential_equals_diffusers_exponential(engine: Engine, sampler: str) -> None:
    # rho 1 makes Polyexponential the same formula as Exponential, which diffusers computes itself:
    # equal images show our sigma list and timesteps drive the scheduler exactly as its own do
    poly = engine.generate(req(sampler_name=sampler, scheduler="Polyexponential"))
    expo = engine.generate(req(sampler_name=sampler, scheduler="Exponential"))
    assert max_diff(poly.images[0], expo.images[0]) <= 2


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
    assert seen == [(1, 2), (2, 2)]
