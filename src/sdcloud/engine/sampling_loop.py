"""The sampling loop: txt2img, img2img, inpaint and hires fix over one loaded pipeline.

We drive the UNet, scheduler and VAE ourselves (rather than calling the diffusers pipeline)
because A1111 semantics need it: per-image seeds and variation seeds, prompt editing that
swaps conditioning mid-run, inpaint fill modes, hires fix, cancel/skip between steps and
live previews. Each step does exactly what the diffusers pipeline does, so the speed is the
same (bench/engine_overhead.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdcloud import prompt_syntax
from sdcloud.engine import image_ops as im
from sdcloud.engine.conditioning import Conditioning, PromptEncoder, pad_all
from sdcloud.engine.memory_fit import check_fits
from sdcloud.engine.request_rules import (
    LATENT_UPSCALE_MODES,
    PIXEL_UPSCALERS,
    default_denoise,
    hires_target,
    validate,
)
from sdcloud.engine.sampler_names import build_scheduler, effective_schedule, resolve_sampler, set_timesteps
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest, GenerationFailed
from sdcloud.jobs.control import CancelToken, Progress, ProgressCallback

# DPM++ SDE's Brownian tree starts at the schedule's sigma_min as diffusers rounds it; the last
# query can sit a float rounding below it, which torchsde clamps after warning on every image.
warnings.filterwarnings("ignore", message=r"Should have (ta|tb)>=t0", category=UserWarning, module=r"torchsde")

# how each hires upscaler of ``request_rules`` (which owns the names) is done
LATENT_INTERPOLATION = dict(zip(LATENT_UPSCALE_MODES, (
    ("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True), ("nearest", False),
    ("nearest-exact", False)), strict=True))
PIXEL_RESAMPLING = dict(zip(PIXEL_UPSCALERS, (Image.LANCZOS, Image.NEAREST), strict=True))
MAX_SCHEDULE_STEPS = 1000  # the longest schedule a hires pass computes (SD's training steps)
# Cheap latent → RGB projection for live previews (A1111's "Approx cheap").
_PREVIEW_FACTORS = {
    "sd": [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    "sdxl": [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
             [-0.3165, -0.2492, -0.2188]],
}


class _Skip(Exception):
    pass


class _Interrupt(Exception):
    """Stop the job. ``latents`` (set when steps of this batch were done) and then ``images``
    carry the partial result out, as A1111 returns the image it had when interrupted."""

    latents: torch.Tensor | None = None
    images: list[Image.Image] | None = None


@dataclass
class ModelContext:
    pipe: Any
    family: str
    variant: str
    device: Any
    dtype: Any
    encoder: PromptEncoder
    upscalers: Any = None  # sdcloud.upscalers.Upscalers: model upscalers for hires fix
    controlnets: Any = None  # sdcloud.controlnet.models.ControlNetCache
    title: str = ""  # A1111's short title ``name [hash]`` (the infotext's Refiner / Hires checkpoint)
    resident: bool = True  # UNet and text encoders on ``device`` (``engine.residency``)

    @property
    def is_xl(self) -> bool:
        return self.family in ("sdxl", "sdxl_refiner")


CondSchedule = list[tuple[int, Conditioning]]  # (end step, cond): one prompt's prompt-editing schedule

# A1111's options sdxl_refiner_high_aesthetic_score / ..._low_...: the SDXL refiner's extra time id
REFINER_AESTHETIC_SCORE = 6.0
REFINER_NEGATIVE_AESTHETIC_SCORE = 2.5


@dataclass
class Refiner:
    """A1111's refiner: from the step where ``at`` of the sampling is done, the pass goes on with
    ``ctx``'s UNet (same sampler and sigmas, the latents carried over, the prompts encoded again
    with its text encoders). ``by_steps``: the fraction counts steps (A1111's option
    ``refiner_switch_by_sample_steps``), else the timestep reached (``(999 - t) / 1000``)."""

    ctx: ModelContext
    at: float
    by_steps: bool = False


@dataclass
class Pass:
    """One sampling pass over a batch. The prompts are encoded by the model that samples
    (``model``, else the request's), once per model (``Denoiser.conds_for``)."""

    sampler: str
    schedule: str
    steps: int
    width: int
    height: int
    prompt: str
    negative_prompt: str
    cond_steps: int  # the steps prompt editing is timed on (the first pass's)
    hires_steps: int | None = None  # set for the hires pass (A1111 times its edits on the first pass)
    denoise: float | None = None  # None = txt2img from pure noise
    fixed_steps: bool = False  # hires pass: run exactly ``steps`` (A1111 passes its steps to sample_img2img)
    model: ModelContext | None = None  # another checkpoint for this pass (hires checkpoint)
    refiner: Refiner | None = None


def img2img_steps(steps: int, denoise: float, fixed_steps: bool = False) -> tuple[int, int]:
    """A1111 1.10 ``sd_samplers_common.setup_img2img_steps`` (``img2img_fix_steps`` off, its default):
    ``(schedule steps, t_enc)``. The whole schedule is computed and the sampler runs its last
    ``t_enc + 1`` steps, from ``sigmas[schedule steps - t_enc - 1]``. img2img: ``t_enc =
    int(min(denoise, 0.999) * steps)`` (20 steps at 0.75: 16 steps from the 5th sigma). The hires
    pass: a schedule of ``int(steps / min(denoise, 0.999))`` steps, of which it runs ``steps``
    (none at denoise 0). Unlike A1111, that schedule stops at SD's 1000 training steps (a tiny
    strength would ask for millions, or overflow)."""
    if fixed_steps:
        if denoise <= 0:
            return 0, steps - 1
        d = min(denoise, 0.999)
        total = int(steps / d) if steps < d * MAX_SCHEDULE_STEPS else MAX_SCHEDULE_STEPS
        return max(total, steps), steps - 1
    return steps, int(min(denoise, 0.999) * steps)


@dataclass
class BatchOutput:
    images: list[Image.Image]
    seeds: list[int]
    subseeds: list[int]


def resolve_seeds(req: GenerationRequest) -> tuple[list[int], list[int]]:
    """A1111: seed −1 → random; image i gets seed+i (all equal when a variation is used)."""
    total = req.batch_size * req.n_iter
    seed = req.seed if req.seed is not None and req.seed != -1 else random.randrange(4294967294)
    subseed = req.subseed if req.subseed is not None and req.subseed != -1 else random.randrange(4294967294)
    seeds = [int(seed) + (i if req.subseed_strength == 0 else 0) for i in range(total)]
    subseeds = [int(subseed) + i for i in range(total)]
    return seeds, subseeds


def _slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    an, bn = a / a.norm(), b / b.norm()
    dot = (an * bn).sum().clamp(-1, 1)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def make_noise(seeds: list[int], subseeds: list[int], strength: float, shape: tuple[int, int, int],
               resize_from: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Per-image noise from each image's seed on the CPU (device-independent, like RNG: CPU), and
    each image's generator for the noise ancestral/SDE samplers add at each step (A1111's
    ImageRNG): the seed's generator, advanced past the initial noise drawn from it (A1111 draws
    resized-seed noise from a fresh generator, so in that case it starts from the seed). Image i
    of a batch thus gets exactly the noise it gets when generated alone."""
    out, gens = [], []
    for seed, subseed in zip(seeds, subseeds, strict=True):
        gen_shape = shape if not resize_from else (shape[0], resize_from[1] // 8, resize_from[0] // 8)
        gen = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(gen_shape, generator=gen)
        if strength > 0:
            sub = torch.randn(gen_shape, generator=torch.Generator("cpu").manual_seed(subseed))
            noise = _slerp(strength, noise, sub)
        if resize_from and gen_shape != shape:
            full = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
            h, w = min(shape[1], gen_shape[1]), min(shape[2], gen_shape[2])
            ty, tx = (shape[1] - h) // 2, (shape[2] - w) // 2
            sy, sx = (gen_shape[1] - h) // 2, (gen_shape[2] - w) // 2
            full[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
            noise = full
            gen = torch.Generator("cpu").manual_seed(seed)
        out.append(noise)
        gens.append(gen)
    return torch.stack(out), gens


class Denoiser:
    """Runs passes for one request on one model context (and the other checkpoints its passes name)."""

    def __init__(self, ctx: ModelContext, req: GenerationRequest, progress: ProgressCallback | None,
                 cancel: CancelToken | None, preview: bool, total_steps: int,
                 use: Callable[[ModelContext], None] | None = None) -> None:
        self.ctx, self.req, self.progress, self.cancel, self.preview = ctx, req, progress, cancel, preview
        self.total_steps = total_steps
        self.done_steps = 0
        self.job = 0
        self.control: Any = None  # sdcloud.controlnet.apply.ControlRunner: ControlNet residuals
        # puts a model's UNet and text encoders on the device before it computes (the engine's
        # GPU-memory rule: another model may be parked to make room)
        self.use = use or (lambda ctx: None)
        self.refined = False  # a pass switched to its refiner
        self.params: dict[str, object] = {}  # infotext labels of what was used (Sigma churn, NGMS, ...)
        self.last_pass_refined = False
        self._conds: dict[tuple[Any, ...], tuple[list[tuple[float, CondSchedule]], CondSchedule]] = {}

    # -- conditioning --------------------------------------------------------------------
    def schedule_conds(self, prompt: str, steps: int, hires_steps: int | None = None,
                       ctx: ModelContext | None = None) -> CondSchedule:
        """Conditioning per step range; for the hires pass, A1111 times edits on the
        first-pass steps (``[a:b:0.5]`` = half of the first pass, so the hires pass sees b)."""
        ctx = ctx or self.ctx
        out = []
        for end, text in prompt_syntax.get_schedules(prompt, steps, hires_steps=hires_steps):
            out.append((end, ctx.encoder(text, self.req.clip_skip)))
        return out

    def conds_for(self, p: Pass, ctx: ModelContext) -> tuple[list[tuple[float, CondSchedule]], CondSchedule]:
        """``([(weight, schedule) per AND part], negative schedule)`` of a pass, encoded by ``ctx``."""
        key = (id(ctx), p.prompt, p.negative_prompt, p.cond_steps, p.hires_steps)
        if key not in self._conds:
            self.use(ctx)
            try:
                parts = [(w, self.schedule_conds(text, p.cond_steps, p.hires_steps, ctx))
                         for text, w in prompt_syntax.split_and(p.prompt)]
                unconds = self.schedule_conds(p.negative_prompt, p.cond_steps, p.hires_steps, ctx)
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
                raise GenerationFailed(f"out of GPU memory while encoding the prompt: {exc}") from None
            self._conds[key] = (parts, unconds)
        return self._conds[key]

    def _cond_at(self, conds: CondSchedule, step: int) -> Conditioning:
        for end, cond in conds:
            if step <= end:
                return cond
        return conds[-1][1]

    # -- the loop ------------------------------------------------------------------------
    def run_pass(self, p: Pass, latents: torch.Tensor | None, noise: torch.Tensor,
                 init_latents: torch.Tensor | None = None, latent_mask: torch.Tensor | None = None,
                 image_cond: torch.Tensor | None = None, seeds: list[int] | None = None,
                 generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """One pass. ``seeds`` and ``generators`` (one per image, from ``make_noise``) drive the
        noise that ancestral and SDE samplers add at each step."""
        self.last_pass_refined = False
        active = p.model or self.ctx
        device = self.ctx.device
        sched_steps, t_enc = (p.steps, p.steps - 1) if p.denoise is None else \
            img2img_steps(p.steps, p.denoise, p.fixed_steps)
        if sched_steps == 0:  # hires at denoising 0: nothing to sample
            assert latents is not None
            return latents
        scheduler = build_scheduler(p.sampler, p.schedule, dict(active.pipe.scheduler.config))
        r = self.req
        sched_steps = set_timesteps(scheduler, p.sampler, p.schedule, sched_steps, device, active.is_xl,
                                    {"sigma_min": r.sigma_min, "sigma_max": r.sigma_max, "rho": r.rho,
                                     "discard": r.always_discard_next_to_last_sigma}, self.params)
        t_enc = min(t_enc, sched_steps - 1)
        seeds = list(seeds) if seeds is not None else list(range(len(noise)))
        if hasattr(scheduler, "noise_sampler_seed"):
            scheduler.noise_sampler_seed = seeds  # DPM++ SDE: one Brownian tree per image, as A1111
        timesteps = scheduler.timesteps
        noise = noise.to(device=device, dtype=torch.float32)
        if p.denoise is None:
            latents = noise * scheduler.init_noise_sigma
        else:  # A1111: sample over sigmas[sched_steps - t_enc - 1:], t_enc + 1 steps
            first = sched_steps - t_enc - 1
            if hasattr(scheduler, "start_at"):  # our k-diffusion samplers lay out the shortened schedule
                scheduler.start_at(first)
                timesteps = scheduler.timesteps
            else:  # diffusers: a step's model calls are ``order`` timesteps (Heun-like: first-order call first)
                start = first * scheduler.order
                timesteps = timesteps[start:]
                if hasattr(scheduler, "set_begin_index"):
                    scheduler.set_begin_index(start)
            assert latents is not None
            if len(timesteps) == 0:
                return latents
            latents = scheduler.add_noise(latents.to(device, torch.float32), noise, timesteps[:1].repeat(len(noise)))
        step_params = inspect.signature(scheduler.step).parameters
        step_kwargs: dict[str, Any] = {}
        if "generator" in step_params:
            step_kwargs["generator"] = generators or [torch.Generator("cpu").manual_seed(s) for s in seeds]
        if "eta" in step_params and self.req.eta is not None:
            step_kwargs["eta"] = self.req.eta
        step_kwargs.update(self._sigma_tweaks(step_params))
        log_sigmas = None
        if self.req.s_min_uncond > 0:  # NGMS compares the step's sigma (k-diffusion's t_to_sigma)
            alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
            log_sigmas = (((1 - alphas) / alphas) ** 0.5).log().numpy()
        batch = latents.shape[0]
        cfg = self.req.cfg_scale
        total = len(timesteps)
        order = int(getattr(scheduler, "order", 1))
        run_steps = (total + order - 1) // order if order > 1 else total
        pass_done = 0
        control = self.control
        self.use(active)
        parts, unconds = self.conds_for(p, active)
        for i, t in enumerate(timesteps):
            try:
                self._check_cancel()
            except _Interrupt as stop:
                if i > 0:
                    stop.latents = latents
                raise
            if p.refiner is not None and active is not p.refiner.ctx and (order == 1 or i % order == 0) \
                    and self._switch_due(p.refiner, pass_done, run_steps, t):
                active = p.refiner.ctx
                self.use(active)
                parts, unconds = self.conds_for(p, active)
                control = None  # ControlNets are made for the first model's UNet
                self.refined = self.last_pass_refined = True
            unet = active.pipe.unet
            inpainting = image_cond is not None and unet.config.in_channels == 9
            out = self._model_output(active, p, unet, latents, scheduler, t, i, total, batch, cfg, parts, unconds,
                                     image_cond if inpainting else None, control,
                                     self._skip_uncond(i, total, t, log_sigmas))
            latents = scheduler.step(out, t, latents, **step_kwargs).prev_sample
            if init_latents is not None and latent_mask is not None and not inpainting:
                if i < total - 1:
                    keep = scheduler.add_noise(init_latents, noise, timesteps[i + 1:i + 2].repeat(batch))
                else:
                    keep = init_latents
                latents = (1 - latent_mask) * keep + latent_mask * latents
            # second-order samplers call the model twice a step (once for the last step to 0): count steps
            if order == 1 or i % order == order - 1 or i == total - 1:
                self.done_steps += 1
                pass_done += 1
                self._report(i + 1, latents)
        return latents

    def _sigma_tweaks(self, step_params: Any) -> dict[str, float]:
        """A1111's ``s_churn``/``s_tmin``/``s_tmax``/``s_noise`` for a sampler that takes them
        (written to the infotext when not the default, as A1111 does)."""
        out: dict[str, float] = {}
        for name, label, default in (("s_churn", "Sigma churn", 0.0), ("s_tmin", "Sigma tmin", 0.0),
                                     ("s_tmax", "Sigma tmax", 0.0), ("s_noise", "Sigma noise", 1.0)):
            value = float(getattr(self.req, name))
            if name in step_params and value != default:
                out[name] = value
                self.params[label] = value
        return out

    def _skip_uncond(self, i: int, total: int, t: Any, log_sigmas: Any) -> bool:
        """A1111's CFGDenoiser: no negative prompt for the first ``skip_early_cond`` of the sampling
        (Skip Early CFG), or below sigma ``s_min_uncond`` on every other call (NGMS)."""
        req = self.req
        if req.skip_early_cond > 0 and i / max(1, total) <= req.skip_early_cond:
            self.params["Skip Early CFG"] = req.skip_early_cond
            return True
        if log_sigmas is not None and (i % 2 or req.s_min_uncond_all):
            sigma = float(np.exp(np.interp(float(t), np.arange(len(log_sigmas)), log_sigmas)))
            if sigma < req.s_min_uncond:
                self.params["NGMS"] = req.s_min_uncond
                if req.s_min_uncond_all:
                    self.params["NGMS all steps"] = "True"
                return True
        return False

    @staticmethod
    def _switch_due(refiner: Refiner, done: int, steps: int, t: Any) -> bool:
        """A1111's ``apply_refiner``: the fraction of steps done, or of the timesteps passed."""
        if refiner.by_steps:
            completed = done / max(1, steps)
        else:
            timestep = min(999, max(0, round(float(t))))
            completed = (999 - timestep) / 1000
        return completed >= refiner.at

    def _model_output(self, ctx: ModelContext, p: Pass, unet: Any, latents: torch.Tensor, scheduler: Any, t: Any,
                      i: int, total: int, batch: int, cfg: float, parts: list[tuple[float, CondSchedule]],
                      unconds: CondSchedule, image_cond: torch.Tensor | None, control: Any,
                      skip_uncond: bool = False) -> torch.Tensor:
        """The guided model output of one call: ``uncond + cfg * (cond - uncond)``, or with ``AND``
        parts A1111's ``combine_denoised``: ``uncond + cfg * sum(weight_k * (cond_k - uncond))``
        (linear, so the same on the noise prediction as on the denoised image). ``skip_uncond``:
        the positive prompt alone (a plain prompt only)."""
        conds = [(w, self._cond_at(c, i)) for w, c in parts]
        plain = len(conds) == 1 and conds[0][0] == 1.0
        use_cfg = (cfg > 1.0 and not skip_uncond) or not plain
        uncond = self._cond_at(unconds, i)
        rows = pad_all([uncond, *(c for _, c in conds)], ctx.encoder("", self.req.clip_skip))
        if not use_cfg:
            rows = rows[1:]
        n = len(rows)
        emb = torch.cat([r.embeds.expand(batch, -1, -1) for r in rows])
        model_in = torch.cat([latents] * n) if n > 1 else latents
        model_in = scheduler.scale_model_input(model_in, t)
        if image_cond is not None:
            model_in = torch.cat([model_in, torch.cat([image_cond] * n)], dim=1)
        kwargs: dict[str, Any] = {}
        if ctx.is_xl:
            negative = [use_cfg and k == 0 for k in range(n)]
            kwargs["added_cond_kwargs"] = self._added_cond(ctx, p, rows, negative, batch)
        if control is not None:
            kwargs.update(control(model_in[:, :4], t, emb, kwargs.get("added_cond_kwargs"), i, total,
                                  use_cfg, (p.width, p.height), p.fixed_steps, uncond_rows=batch if use_cfg else 0))
        with torch.no_grad():
            out = unet(model_in.to(ctx.dtype), t, encoder_hidden_states=emb.to(ctx.dtype), **kwargs).sample.float()
        if not use_cfg:
            return out
        outs = out.split(batch)
        out_u = outs[0]
        if plain:
            return out_u + cfg * (outs[1] - out_u)
        combined = out_u.clone()
        for (weight, _), out_c in zip(conds, outs[1:], strict=True):
            combined += (out_c - out_u) * (weight * cfg)
        return combined

    def _added_cond(self, ctx: ModelContext, p: Pass, rows: list[Conditioning], negative: list[bool],
                    batch: int) -> dict[str, Any]:
        """SDXL's pooled text embeddings and time ids per batch row: ``(h, w, crop 0, 0, h, w)``, or
        for the SDXL refiner ``(h, w, crop 0, 0, aesthetic score)`` (A1111's 6 and 2.5)."""
        pooled = torch.cat([r.pooled.expand(batch, -1) for r in rows])
        if ctx.family == "sdxl_refiner":
            ids = [[p.height, p.width, 0, 0,
                    REFINER_NEGATIVE_AESTHETIC_SCORE if neg else REFINER_AESTHETIC_SCORE] for neg in negative]
        else:
            ids = [[p.height, p.width, 0, 0, p.height, p.width]] * len(rows)
        time_ids = torch.tensor(ids, dtype=torch.float32).repeat_interleave(batch, dim=0)
        return {"text_embeds": pooled.to(ctx.dtype), "time_ids": time_ids.to(ctx.device, ctx.dtype)}

    def _check_cancel(self) -> None:
        if self.cancel is None:
            return
        if self.cancel.interrupted:
            raise _Interrupt
        if self.cancel.take_skip():
            raise _Skip

    def _report(self, step: int, latents: torch.Tensor) -> None:
        if self.progress is None:
            return
        preview = self.preview_image(latents) if self.preview else None
        self.progress(Progress(step=self.done_steps, steps=self.total_steps, job=self.job,
                               job_count=self.req.n_iter, preview=preview))

    def preview_image(self, latents: torch.Tensor) -> Image.Image:
        factors = torch.tensor(_PREVIEW_FACTORS["sdxl" if self.ctx.is_xl else "sd"], device=latents.device)
        rgb = torch.einsum("chw,cr->hwr", latents[0].float(), factors)
        arr = ((rgb + 1) * 127.5).clamp(0, 255).byte().cpu().numpy()
        return Image.fromarray(arr).resize((latents.shape[-1] * 8, latents.shape[-2] * 8), Image.NEAREST)

    # -- VAE -------------------------------------------------------------------------------
    def encode(self, pil_images: list[Image.Image]) -> torch.Tensor:
        vae = self.ctx.pipe.vae
        x = im.to_tensor(pil_images).to(self.ctx.device, vae.dtype)
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.mode().float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (lat - shift) * vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.ctx.pipe.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents / vae.config.scaling_factor + shift
        with torch.no_grad():
            out = vae.decode(z.to(vae.dtype)).sample
            if vae.dtype == torch.float16 and torch.isnan(out).any():
                vae.to(torch.float32)  # A1111's automatic --no-half-vae fallback
                out = vae.decode(z.float()).sample
        return im.to_pil(out)


def _interp(latents: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    kwargs: dict[str, Any] = {"size": size, "mode": mode}
    if mode in ("bilinear", "bicubic"):
        kwargs["antialias"] = antialias
        kwargs["align_corners"] = False
    return F.interpolate(latents, **kwargs)


def run_batch(sampler: Denoiser, req: GenerationRequest, seeds: list[int], subseeds: list[int],
              first: Pass, hires: Pass | None, init: dict[str, Any] | None) -> list[Image.Image]:
    """One batch: first pass (txt2img or img2img/inpaint), optional hires pass, decode, overlay."""
    shape = (4, first.height // 8, first.width // 8)
    resize_from = (req.seed_resize_from_w, req.seed_resize_from_h) \
        if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None
    noise, gens = make_noise(seeds, subseeds, req.subseed_strength, shape, resize_from)
    device = sampler.ctx.device
    if init is None:
        latents = sampler.run_pass(first, None, noise, seeds=seeds, generators=gens)
    else:
        init_latents = sampler.encode(init["images"])
        if req.resize_mode == 3:
            init_latents = _interp(init_latents, shape[1:], "bilinear", False)
        latent_mask = init.get("latent_mask")
        image_cond = None
        if latent_mask is not None:
            latent_mask = latent_mask.to(device)
            noise_d = noise.to(device)
            if req.inpainting_fill == 2:
                init_latents = init_latents * (1 - latent_mask) + noise_d * latent_mask
            elif req.inpainting_fill == 3:
                init_latents = init_latents * (1 - latent_mask)
            if sampler.ctx.variant == "inpaint":
                masked = sampler.encode(init["masked_images"])
                image_cond = torch.cat([latent_mask, masked], dim=1).to(device)
        latents = sampler.run_pass(first, init_latents, noise, init_latents=init_latents.to(device),
                                   latent_mask=latent_mask, image_cond=image_cond, seeds=seeds, generators=gens)
    if hires is not None:
        if sampler.last_pass_refined and hires.model is None and first.refiner is not None:
            # A1111: the refiner loaded in the first pass is the model the hires pass runs on
            hires = dataclasses.replace(hires, model=first.refiner.ctx)
        up = req.hr_upscaler
        size = (hires.height // 8, hires.width // 8)
        if up in LATENT_INTERPOLATION:
            mode, aa = LATENT_INTERPOLATION[up]
            latents = _interp(latents, size, mode, aa)
        else:
            if up in PIXEL_RESAMPLING:
                pics = [p.resize((hires.width, hires.height), PIXEL_RESAMPLING[up]) for p in sampler.decode(latents)]
            else:  # a model upscaler (ESRGAN, ...), as A1111's images.resize_image
                pics = [sampler.ctx.upscalers.upscale_to(p, up, hires.width, hires.height)
                        for p in sampler.decode(latents)]
            latents = sampler.encode(pics)
        hr_noise, hr_gens = make_noise(seeds, subseeds, req.subseed_strength, (4, *size))
        try:
            latents = sampler.run_pass(hires, latents, hr_noise, seeds=seeds, generators=hr_gens)
        except _Interrupt as stop:
            if stop.latents is None:  # stopped before a hires step: the first pass is the result
                stop.latents = latents
            raise
    return _decoded(sampler, latents, init)


def _decoded(sampler: Denoiser, latents: torch.Tensor, init: dict[str, Any] | None) -> list[Image.Image]:
    images = sampler.decode(latents)
    if init is not None and init.get("overlay_mask") is not None:
        images = [im.overlay(orig, gen, init["overlay_mask"], init.get("box"))
                  for orig, gen in zip(init["originals"], images, strict=True)]
    return images


def _run_batch_keeping_partial(sampler: Denoiser, req: GenerationRequest, seeds: list[int],
                               subseeds: list[int], first: Pass, hires: Pass | None,
                               init: dict[str, Any] | None) -> list[Image.Image]:
    """:func:`run_batch`; when interrupted after some steps, the images as far as they got
    ride out on the ``_Interrupt`` (A1111 answers them, and clients read ``images[0]``)."""
    try:
        return run_batch(sampler, req, seeds, subseeds, first, hires, init)
    except _Interrupt as stop:
        if stop.latents is not None:
            stop.images = _decoded(sampler, stop.latents, init)
        raise


def prepare_init(sampler: Denoiser, req: GenerationRequest, batch: int) -> dict[str, Any]:
    """Resize init images, prepare the mask (blur, invert, 'only masked' crop, fill)."""
    width, height = req.width, req.height
    sources = list(req.init_images)
    if len(sources) not in (1, batch):
        raise BadRequest(f"send 1 init image or one per image in the batch ({batch}), got {len(sources)}")
    sources = [s.convert("RGB") for s in sources] * (batch if len(sources) == 1 else 1)
    init: dict[str, Any] = {}
    if req.mask is None:
        init["images"] = [im.resize_image(req.resize_mode, s, width, height) for s in sources]
        return init
    originals = [im.resize_image(req.resize_mode, s, width, height) if not req.inpaint_full_res else s
                 for s in sources]
    mask = im.prepare_mask(req.mask, bool(req.inpainting_mask_invert), originals[0].size)
    overlay_mask = im.blur_mask(mask, req.mask_blur)
    box = None
    if req.inpaint_full_res:
        box = im.masked_region(mask, req.inpaint_full_res_padding, width, height)
    if box is not None:
        work = [o.crop(box).resize((width, height), Image.LANCZOS) for o in originals]
        work_mask = overlay_mask.crop(box).resize((width, height), Image.LANCZOS)
    else:
        work = [o.resize((width, height), Image.LANCZOS) if o.size != (width, height) else o for o in originals]
        work_mask = overlay_mask.resize((width, height), Image.LANCZOS)
    if req.inpainting_fill == 0:
        work = [im.fill_masked(w, work_mask) for w in work]
    lm = torch.from_numpy(np.asarray(work_mask.resize((width // 8, height // 8), Image.BILINEAR),
                                     dtype=np.float32) / 255.0)
    lm = (lm > 0.5).float()[None, None].repeat(batch, 1, 1, 1)
    init.update(images=work, originals=originals, overlay_mask=overlay_mask, box=box, latent_mask=lm)
    if sampler.ctx.variant == "inpaint":
        black = Image.new("RGB", (width, height))
        init["masked_images"] = [Image.composite(black, w, work_mask.point(lambda v: 255 if v > 127 else 0))
                                 for w in work]
    return init


@dataclass
class ExtraModels:
    """The other checkpoints of a request, loaded by the engine: the refiner (``refiner_passes``:
    A1111's option ``hires_fix_refiner_pass``, which passes of a hires-fix request switch) and
    the hires pass's checkpoint; ``use`` makes a model resident before it computes."""

    refiner: Refiner | None = None
    refiner_passes: str = "second pass"
    hires: ModelContext | None = None
    use: Callable[[ModelContext], None] | None = None


def generate_images(ctx: ModelContext, req: GenerationRequest, limits: Any,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                    preview: bool = False,
                    on_batch: Callable[[list[Image.Image], list[int], list[int]], None] | None = None,
                    models: ExtraModels | None = None,
                    ) -> tuple[list[Image.Image], list[int], list[int], bool, dict[str, Any]]:
    """Run the whole request. Returns (images, seeds, subseeds, interrupted, resolved values)."""
    validate(req, limits, ctx.upscalers)
    check_fits(ctx, req, limits)
    models = models or ExtraModels()
    sampler_name, schedule = resolve_sampler(req.sampler_name, req.scheduler)
    hr_sampler, hr_schedule = sampler_name, schedule
    if req.enable_hr and req.hr_sampler_name and req.hr_sampler_name != "Use same sampler":
        hr_sampler, hr_schedule = resolve_sampler(req.hr_sampler_name, req.hr_scheduler or schedule)
    elif req.enable_hr and req.hr_scheduler and req.hr_scheduler != "Use same scheduler":
        hr_schedule = resolve_sampler(sampler_name, req.hr_scheduler)[1]
    seeds, subseeds = resolve_seeds(req)
    is_img2img = req.is_img2img
    denoise = default_denoise(req)
    hires = req.enable_hr and not is_img2img
    first_steps = req.steps
    hr_steps = (req.hr_second_pass_steps or req.steps) if hires else 0
    run_first = img2img_steps(first_steps, denoise)[1] + 1 if is_img2img else first_steps
    run_hr = hr_steps if hires and img2img_steps(hr_steps, denoise, True)[0] > 0 else 0
    total = (run_first + run_hr) * req.n_iter
    s = Denoiser(ctx, req, progress, cancel, preview, total, models.use)
    if getattr(req, "controlnet", None) and ctx.controlnets is not None:
        from sdcloud.controlnet.apply import build_runner

        s.control = build_runner(ctx, req, ctx.controlnets.folder / "annotators")
    refiner = models.refiner
    first_refiner = refiner if not hires or models.refiner_passes in ("first pass", "both passes") else None
    hr_refiner = refiner if hires and models.refiner_passes in ("second pass", "both passes") else None
    first = Pass(sampler_name, schedule, first_steps, req.width, req.height, req.prompt, req.negative_prompt,
                 first_steps, None, denoise if is_img2img else None, refiner=first_refiner)
    hr_pass = None
    if hires:
        tw, th = hires_target(req)
        hr_pass = Pass(hr_sampler, hr_schedule, hr_steps, tw, th, req.hr_prompt or req.prompt,
                       req.hr_negative_prompt or req.negative_prompt, first_steps, hr_steps, denoise,
                       fixed_steps=True, model=models.hires, refiner=hr_refiner)
    images: list[Image.Image] = []
    out_seeds: list[int] = []
    out_subseeds: list[int] = []
    interrupted = False
    bs = req.batch_size
    for n in range(req.n_iter):
        s.job = n
        b_seeds, b_sub = seeds[n * bs:(n + 1) * bs], subseeds[n * bs:(n + 1) * bs]
        try:
            init = prepare_init(s, req, bs) if is_img2img else None
            batch_images = _run_batch_keeping_partial(s, req, b_seeds, b_sub, first, hr_pass, init)
        except _Skip:
            continue
        except _Interrupt as stop:
            interrupted = True
            if stop.images:
                images.extend(stop.images)
                out_seeds.extend(b_seeds)
                out_subseeds.extend(b_sub)
            break
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
            raise GenerationFailed("out of GPU memory: lower the size or batch, or use --medvram") from None
        images.extend(batch_images)
        out_seeds.extend(b_seeds)
        out_subseeds.extend(b_sub)
        if on_batch is not None:
            on_batch(batch_images, b_seeds, b_sub)
    resolved = {
        "sampler": sampler_name, "schedule": effective_schedule(sampler_name, schedule),
        "hr_sampler": hr_sampler, "hr_schedule": effective_schedule(hr_sampler, hr_schedule),
        "schedule_label": schedule, "hr_schedule_label": hr_schedule,  # as asked (A1111 compares these)
        "denoise": denoise if (is_img2img or hires) else None, "hires_steps": hr_steps,
        "hires_size": (hr_pass.width, hr_pass.height) if hr_pass else None,
        "all_seeds": seeds, "all_subseeds": subseeds, "refined": s.refined, "params": dict(s.params),
    }
    return images, out_seeds, out_subseeds, interrupted, resolved
