"""The engine's typed contract: what callers (CLI, API, UI, queue workers) pass in and get back.

Kept free of torch so API schemas and the job queue can import it cheaply. Images are
``PIL.Image.Image`` objects (typed ``Any`` here to avoid importing PIL at load time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# the job's side of the contract: owned by jobs/, used by the engine's step loop
from sdcloud.jobs.control import CancelToken, Progress, ProgressCallback

__all__ = ["CancelToken", "GenerationRequest", "GenerationResult", "Progress", "ProgressCallback"]

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_SCHEDULER = "Automatic"


@dataclass
class GenerationRequest:
    """One txt2img/img2img/inpaint job, in A1111's vocabulary (field names as in its API)."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = DEFAULT_SAMPLER
    scheduler: str = DEFAULT_SCHEDULER
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    clip_skip: int = 1
    eta: float | None = None
    tiling: bool = False
    # hires fix (txt2img)
    enable_hr: bool = False
    denoising_strength: float | None = None
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_checkpoint_name: str | None = None  # another checkpoint for the hires pass (None: the same)
    # SDXL refiner (any checkpoint): sampling goes on with it once refiner_switch_at of it is done
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8
    refiner_switch_by_sample_steps: bool = False  # A1111 option: count steps, not timesteps
    hires_fix_refiner_pass: str = "second pass"  # A1111 option: "first pass", "second pass", "both passes"
    # A1111's sampler parameters (k-diffusion's, where the sampler takes them: Euler)
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0 = no upper bound
    s_noise: float = 1.0
    # A1111's skipping of the negative prompt: NGMS (below this sigma, every other step) and Skip Early CFG
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False  # NGMS on every step
    skip_early_cond: float = 0.0  # fraction of the sampling, from the start
    # A1111's options for the schedules computed as sigma lists (Karras, Exponential, ...): 0 = their own
    sigma_min: float = 0.0
    sigma_max: float = 0.0
    rho: float = 0.0
    always_discard_next_to_last_sigma: bool = False  # A1111 option, for every sigma-list schedule
    # img2img / inpaint: set init_images to make this an img2img job
    init_images: list[Any] = field(default_factory=list)
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    mask: Any = None
    mask_blur: int = 4
    inpainting_fill: int = 1  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = 1.0
    # ControlNet units (sdcloud.controlnet.units.ControlUnit, images decoded)
    controlnet: list[Any] = field(default_factory=list)
    # model selection for this job (None = the loaded one)
    model: str | None = None
    vae: str | None = None

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    def to_payload(self) -> dict[str, Any]:
        """The JSON-able fields of a job payload: everything but the images (stored as files
        beside the job) and the model/VAE (loaded by the job runner before it generates)."""
        skip = {"init_images", "mask", "model", "vae", "controlnet"}  # units travel as their own payload key
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    @classmethod
    def from_payload(cls, data: dict[str, Any], init_images: list[Any] | None = None,
                     mask: Any = None) -> GenerationRequest:
        """The request back from ``to_payload``'s fields plus the loaded images."""
        return cls(**data, init_images=list(init_images or []), mask=mask)


@dataclass
class GenerationResult:
    images: list[Any]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    model_name: str
    model_hash: str | None
    vae_name: str | None = None
    vae_hash: str | None = None
    width: int = 512
    height: int = 512
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)
