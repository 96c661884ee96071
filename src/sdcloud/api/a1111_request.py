"""The one place A1111 request fields become a ``GenerationRequest``: sampler names split
into sampler + schedule type, random seeds drawn (so a retried job makes the same images),
A1111's aliases (``sampler_index``, ``mask_blur_x``) and the options that act as request
fields (``CLIP_stop_at_last_layers``, ``refiner_switch_by_sample_steps``,
``hires_fix_refiner_pass``). Checking and defaults are ``engine.request_rules``'."""

from __future__ import annotations

import secrets
from typing import Any

from sdcloud.api.models import Img2ImgRequest, Txt2ImgRequest
from sdcloud.engine.request_rules import MAX_SEED
from sdcloud.engine.sampler_names import resolve_sampler
from sdcloud.engine.types import GenerationRequest

NO_CHECKPOINT = ("", "None", "none", "Use same checkpoint")
"""What A1111 clients send for "no refiner" / "the same checkpoint for the hires pass"."""


def to_generation_request(req: Txt2ImgRequest | Img2ImgRequest, prompt: str, negative: str,
                          opts: dict[str, Any]) -> GenerationRequest:
    """``prompt``/``negative`` are the request's prompts with its styles applied; ``opts`` the
    server options with the request's overrides. img2img's ``init_images`` and ``mask`` stay
    as the client sent them (decoded only once the request is known to be valid)."""
    sampler, schedule = resolve_sampler(req.sampler_name or req.sampler_index, req.scheduler)
    gen = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        seed=req.seed if req.seed != -1 else secrets.randbelow(MAX_SEED),
        subseed=req.subseed if req.subseed != -1 else secrets.randbelow(MAX_SEED),
        subseed_strength=req.subseed_strength,
        seed_resize_from_h=req.seed_resize_from_h,
        seed_resize_from_w=req.seed_resize_from_w,
        sampler_name=sampler,
        scheduler=schedule,
        batch_size=req.batch_size,
        n_iter=req.n_iter,
        steps=req.steps,
        cfg_scale=req.cfg_scale,
        width=req.width,
        height=req.height,
        clip_skip=int(opts["CLIP_stop_at_last_layers"]),
        eta=req.eta,
        tiling=bool(req.tiling),
        denoising_strength=req.denoising_strength,
        refiner_switch_by_sample_steps=bool(opts.get("refiner_switch_by_sample_steps", False)),
        hires_fix_refiner_pass=str(opts.get("hires_fix_refiner_pass") or "second pass"),
        s_min_uncond_all=bool(opts.get("s_min_uncond_all", False)),
        skip_early_cond=float(opts.get("skip_early_cond") or 0.0),
        sigma_min=float(opts.get("sigma_min") or 0.0),
        sigma_max=float(opts.get("sigma_max") or 0.0),
        rho=float(opts.get("rho") or 0.0),
        always_discard_next_to_last_sigma=bool(opts.get("always_discard_next_to_last_sigma", False)),
    )
    for name, default in (("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", 0.0), ("s_noise", 1.0),
                          ("s_min_uncond", 0.0)):  # the request's value, else the option's
        value = getattr(req, name)
        if value is None:
            value = opts.get(name, default)
        setattr(gen, name, float(default if value is None else value))
    if req.refiner_checkpoint and req.refiner_checkpoint.strip() not in NO_CHECKPOINT:
        gen.refiner_checkpoint = req.refiner_checkpoint.strip()
    if req.refiner_switch_at is not None:  # kept without a refiner too: an X/Y/Z refiner axis uses it
        gen.refiner_switch_at = req.refiner_switch_at
    if isinstance(req, Txt2ImgRequest):
        hr_sampler = hr_schedule = None
        own_schedule = req.hr_scheduler if req.hr_scheduler not in (None, "", "Use same scheduler") else None
        if req.hr_sampler_name and req.hr_sampler_name != "Use same sampler":
            hr_sampler, hr_schedule = resolve_sampler(req.hr_sampler_name, own_schedule or schedule)
        elif own_schedule:
            hr_schedule = resolve_sampler(sampler, own_schedule)[1]
        gen.enable_hr = req.enable_hr
        gen.hr_scale = req.hr_scale
        gen.hr_upscaler = req.hr_upscaler or "Latent"
        gen.hr_second_pass_steps = req.hr_second_pass_steps
        gen.hr_resize_x, gen.hr_resize_y = req.hr_resize_x, req.hr_resize_y
        gen.hr_sampler_name, gen.hr_scheduler = hr_sampler, hr_schedule
        gen.hr_prompt, gen.hr_negative_prompt = req.hr_prompt, req.hr_negative_prompt
        if req.hr_checkpoint_name and req.hr_checkpoint_name.strip() not in NO_CHECKPOINT:
            gen.hr_checkpoint_name = req.hr_checkpoint_name.strip()
    else:
        gen.init_images = list(req.init_images or [])
        gen.mask = req.mask or None
        gen.resize_mode = req.resize_mode
        gen.mask_blur = req.mask_blur if req.mask_blur is not None else req.mask_blur_x
        gen.inpainting_fill = req.inpainting_fill
        gen.inpaint_full_res = req.inpaint_full_res
        gen.inpaint_full_res_padding = req.inpaint_full_res_padding
        gen.inpainting_mask_invert = req.inpainting_mask_invert
        if req.initial_noise_multiplier is not None:
            gen.initial_noise_multiplier = req.initial_noise_multiplier
    return gen
