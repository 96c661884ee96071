"""The rules of a ``GenerationRequest`` (``engine/types.py``): the one validator, the defaults
and the size rule every entry point uses.

The API maps A1111 fields to a ``GenerationRequest`` (``api/a1111_request.py``), the CLI maps
its flags, the UI goes through the API's mapping; all three call ``validate`` before a job
is queued, and the engine calls it again before any work. No torch here.
"""

from __future__ import annotations

from typing import Any

from sdcloud.engine.sampler_names import resolve_sampler
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest
from sdcloud.prompt_syntax import MAX_PARTS, check_editing, split_and

LATENT_UPSCALE_MODES = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
PIXEL_UPSCALERS = ("Lanczos", "Nearest")
HIRES_UPSCALERS = LATENT_UPSCALE_MODES + PIXEL_UPSCALERS
MAX_SEED = 2**32 - 1
IMG2IMG_DENOISE = 0.75  # A1111's default denoising strength for img2img
HIRES_DENOISE = 0.7  # ... and for the hires pass
REFINER_PASSES = ("first pass", "second pass", "both passes")  # A1111's hires_fix_refiner_pass


def default_denoise(req: GenerationRequest) -> float:
    """The denoising strength the request runs with (A1111's defaults when it gives none)."""
    if req.denoising_strength is not None:
        return req.denoising_strength
    return IMG2IMG_DENOISE if req.is_img2img else HIRES_DENOISE


def hires_target(req: GenerationRequest) -> tuple[int, int]:
    """Second-pass size: explicit resize (one side 0 keeps the aspect) or scale; multiples of 8."""
    w, h = req.width, req.height
    if req.hr_resize_x == 0 and req.hr_resize_y == 0:
        tw, th = int(w * req.hr_scale), int(h * req.hr_scale)
    elif req.hr_resize_y == 0:
        tw, th = req.hr_resize_x, int(req.hr_resize_x * h / w)
    elif req.hr_resize_x == 0:
        tw, th = int(req.hr_resize_y * w / h), req.hr_resize_y
    else:
        tw, th = req.hr_resize_x, req.hr_resize_y
    return max(64, tw // 8 * 8), max(64, th // 8 * 8)


def _between(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, got {value}")


def validate(req: GenerationRequest, limits: Any, upscalers: Any = None) -> None:
    """Reject bad input before any work, with a message that names the field (typed errors the
    API maps to 4xx and the CLI prints on one line). ``limits`` is ``Settings.limits``;
    ``upscalers`` (``sdcloud.upscalers.Upscalers``) knows the model upscalers hires fix may name."""
    for name in ("width", "height"):
        value = getattr(req, name)
        _between(name, value, 64, getattr(limits, f"max_{name}"))
        if not isinstance(value, int) or value % 8:
            raise BadRequest(f"{name} must be a multiple of 8, got {value}")
    _between("steps", req.steps, 1, limits.max_steps)
    _between("batch_size", req.batch_size, 1, limits.max_batch_size)
    _between("n_iter", req.n_iter, 1, limits.max_n_iter)
    for name in ("seed", "subseed"):
        value = getattr(req, name)
        if not -1 <= value <= MAX_SEED:
            raise BadRequest(f"{name} must be -1 (random) or 0..{MAX_SEED}, got {value}")
    text = max(len(req.prompt) + len(req.negative_prompt), len(req.hr_prompt) + len(req.hr_negative_prompt))
    if text > limits.max_prompt_length:
        raise BadRequest(f"prompt and negative prompt are {text} characters; at most "
                         f"{limits.max_prompt_length} are accepted")
    _between("cfg_scale", req.cfg_scale, 0, 100)
    _between("subseed_strength", req.subseed_strength, 0, 1)
    if req.denoising_strength is not None:
        _between("denoising_strength", req.denoising_strength, 0, 1)
    _between("clip_skip", req.clip_skip, 1, 12)
    _between("refiner_switch_at", req.refiner_switch_at, 0, 1)
    for name, hi in (("s_churn", 100), ("s_tmin", 1000), ("s_tmax", 1000), ("s_noise", 2), ("s_min_uncond", 100),
                     ("skip_early_cond", 1), ("sigma_min", 1000), ("sigma_max", 1000), ("rho", 100)):
        _between(name, getattr(req, name), 0, hi)
    if req.hires_fix_refiner_pass not in REFINER_PASSES:
        raise BadRequest(f"hires_fix_refiner_pass must be one of {', '.join(REFINER_PASSES)}, "
                         f"got {req.hires_fix_refiner_pass!r}")
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        check_editing(getattr(req, name), name)
    for name in ("prompt", "hr_prompt"):
        parts = len(split_and(getattr(req, name)))
        if parts > MAX_PARTS:
            raise BadRequest(f"{name} has {parts} AND parts; at most {MAX_PARTS} are accepted")
    resolve_sampler(req.sampler_name, req.scheduler)
    model_upscaler = upscalers is not None and req.hr_upscaler != "None" and upscalers.has(req.hr_upscaler)
    if req.hr_upscaler not in HIRES_UPSCALERS and not model_upscaler:
        models = [n for n in upscalers.names() if n not in ("None", *PIXEL_UPSCALERS)] if upscalers else []
        raise BadRequest(f"unknown hires upscaler (hr_upscaler) '{req.hr_upscaler}'; available: "
                         f"{', '.join([*HIRES_UPSCALERS, *models])}")
    if req.enable_hr and not req.is_img2img:
        _validate_hires(req, limits)
    _check_work(req, limits)
    if req.mask is not None and not req.init_images:
        raise BadRequest("a mask needs an init image")
    if len(req.init_images) > limits.max_batch_size:
        raise BadRequest(f"at most {limits.max_batch_size} init images are accepted")
    if req.resize_mode not in (0, 1, 2, 3):
        raise BadRequest(f"resize_mode must be 0-3, got {req.resize_mode}")
    if req.inpainting_fill not in (0, 1, 2, 3):
        raise BadRequest("inpainting_fill must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing)")
    if not 0 <= req.mask_blur <= 256 or not 0 <= req.inpaint_full_res_padding <= 1024:
        raise BadRequest("mask_blur must be 0-256 and inpaint_full_res_padding 0-1024")


def _check_work(req: GenerationRequest, limits: Any) -> None:
    """width x height x batch_size x steps of each pass within ``limits.max_pixel_steps``: the
    time one request may hold the GPU (each factor alone can be within its own limit)."""
    passes = [(req.width, req.height, req.steps)]
    if req.enable_hr and not req.is_img2img:
        passes.append((*hires_target(req), req.hr_second_pass_steps or req.steps))
    for w, h, steps in passes:
        work = w * h * req.batch_size * steps
        if work > limits.max_pixel_steps:
            raise BadRequest(f"width x height x batch_size x steps is {w}x{h}x{req.batch_size}x{steps} = {work}; "
                             f"at most {limits.max_pixel_steps} (setting limits.max_pixel_steps): lower one of them")


def _validate_hires(req: GenerationRequest, limits: Any) -> None:
    _between("hr_scale", req.hr_scale, 1, 8)
    _between("hr_second_pass_steps", req.hr_second_pass_steps, 0, limits.max_steps)
    if req.hr_sampler_name:
        resolve_sampler(req.hr_sampler_name, req.hr_scheduler or req.scheduler)
    tw, th = hires_target(req)
    if tw > limits.max_width or th > limits.max_height:
        raise BadRequest(f"hires size {tw}x{th} exceeds the maximum {limits.max_width}x{limits.max_height}")
