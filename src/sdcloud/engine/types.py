"""The engine's typed contract: what callers (CLI, API, UI, queue workers) pass in and get back.

Kept free of torch so API schemas and the job queue can import it cheaply. Images are
``PIL.Image.Image`` objects (typed ``Any`` here to avoid importing PIL at load time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class Progress:
    """Reported after each sampling step. ``step`` of ``steps`` counts over the whole job (all
    batches and the hires pass); ``job`` is the batch (0-based) of ``job_count``."""

    step: int
    steps: int
    job: int
    job_count: int
    preview: Any = None  # a small PIL image when asked for, else None

    @property
    def fraction(self) -> float:
        if self.steps <= 0:
            return 0.0
        return min(1.0, self.step / self.steps)


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Cooperative cancellation, checked between sampling steps.

    ``interrupt()`` stops the whole job (finished images are kept); ``skip()`` abandons the
    current batch and moves to the next one.
    """

    def __init__(self) -> None:
        self._interrupt = threading.Event()
        self._skip = threading.Event()

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def take_skip(self) -> bool:
        """True once per ``skip()`` call."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False
