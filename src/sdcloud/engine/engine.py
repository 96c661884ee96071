"""The engine facade: load a model (cached; switching frees the old one), run requests.

One ``Engine`` per process; callers serialise access (the job queue runs one job at a time).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch

from sdcloud import __version__
from sdcloud.catalog import Catalog
from sdcloud.checkpoints.hashing import HashCache
from sdcloud.engine import loader
from sdcloud.engine.conditioning import PromptEncoder
from sdcloud.engine.demo import build_demo_pipeline
from sdcloud.engine.loader import DEMO_KINDS, ModelInfo
from sdcloud.engine.networks import NetworkManager
from sdcloud.engine.sampling_loop import ModelContext, generate_images
from sdcloud.engine.types import GenerationRequest, GenerationResult
from sdcloud.errors import NotFound
from sdcloud.infotext import build_infotext, generation_params
from sdcloud.jobs.control import CancelToken, ProgressCallback
from sdcloud.prompt_syntax import extract_extra_networks
from sdcloud.settings import Settings

log = logging.getLogger(__name__)


def pick_device(preference: str) -> torch.device:
    """CUDA > MPS > CPU (or what the settings ask for)."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(preference: str, device: torch.device) -> torch.dtype:
    if preference == "fp32" or device.type == "cpu":
        return torch.float32
    if preference == "bf16":
        return torch.bfloat16
    return torch.float16


class Engine:
    """Loads models and generates images. Thread-safe for one generation at a time."""

    def __init__(self, settings: Settings) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # no torchvision/processor chatter in the CLI
        self.settings = settings
        self.catalog = Catalog(settings)
        self.hashes = HashCache(settings.state_path / "hashes.json")
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.dtype, self.device)
        self.current: ModelInfo | None = None
        self.vae_name: str | None = None
        self._vae_hash: str | None = None
        self._pipe: Any = None
        self._ctx: ModelContext | None = None
        self._networks: NetworkManager | None = None
        self._lock = threading.RLock()

    # -- models ----------------------------------------------------------------------------
    def resolve_model_path(self, name: str) -> Path:
        path = Path(name).expanduser()
        if path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin") or path.is_dir():
            if path.exists():
                return path
        return self.catalog.resolve("checkpoint", name).path

    def load_model(self, name: str) -> ModelInfo:
        """Load by catalog name, path, or ``demo``/``demo-xl``; a no-op if already loaded."""
        with self._lock:
            if self.current is not None and name in (self.current.name, self.current.title, self.current.path):
                return self.current
            path = None if name in DEMO_KINDS else self.resolve_model_path(name)  # unknown name: keep current
            self.unload()  # free the old model before building the new one
            if path is None:
                kind = DEMO_KINDS[name]
                return self._install(build_demo_pipeline(kind),
                                     ModelInfo(name, name, None, None, "sdxl" if kind == "sdxl" else "sd1",
                                               "inpaint" if kind.endswith("inpaint") else "base", "epsilon", True))
            pipe, arch, prediction = loader.load_any(path, self.dtype)
            sha = self.hashes.get(path).sha256 if path.is_file() else None
            stem = path.stem if path.is_file() else path.name
            try:
                rel = path.resolve().relative_to(self.settings.checkpoints_path.resolve()).as_posix()
            except ValueError:
                rel = path.name
            title = f"{rel} [{sha[:10]}]" if sha else rel
            return self._install(pipe, ModelInfo(stem, title, str(path), sha, arch.family, arch.variant, prediction))

    def load_pipeline(self, pipe: Any, info: ModelInfo) -> ModelInfo:
        """Use a diffusers pipeline built elsewhere (benches build real-size random ones) with
        this engine's device, dtype, ``--medvram``/``--lowvram``, VAE tiling and compile settings."""
        with self._lock:
            self.unload()
            return self._install(pipe, info)

    def _install(self, pipe: Any, info: ModelInfo) -> ModelInfo:
        pipe.set_progress_bar_config(disable=True)
        memory = self.settings.memory if self.device.type == "cuda" else "none"
        if memory == "medvram":
            pipe.enable_model_cpu_offload()
        elif memory == "lowvram":
            pipe.enable_sequential_cpu_offload()
        elif pipe.unet.dtype != self.dtype:
            pipe.to(self.device, self.dtype)
        else:
            pipe.to(self.device)
        if self.settings.vae_tiling:
            pipe.vae.enable_tiling()
        if self.settings.compile:
            pipe.unet = torch.compile(pipe.unet)
        self._pipe = pipe
        self._ctx = ModelContext(pipe, info.family, info.variant, self.device, self.dtype,
                                 PromptEncoder(pipe, info.family))
        self._networks = NetworkManager(pipe, self.catalog, self.hashes)
        self._own_vae = pipe.vae
        self.vae_name, self._vae_hash = None, None
        self.current = info
        log.info("loaded %s (%s %s, %s)", info.title, info.family, info.variant, self.device)
        return info

    def unload(self) -> None:
        """Free the current model (RAM and VRAM)."""
        with self._lock:
            self._pipe = self._ctx = self._networks = None
            self.current = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def load_vae(self, name: str | None) -> str | None:
        """Replace the model's VAE with a file from models/VAE (``None``/"Automatic" = its own)."""
        with self._lock:
            if self._pipe is None:
                raise NotFound("no model is loaded; load one first")
            if not name or name in ("None", "Automatic"):
                self._pipe.vae = self._own_vae
                self.vae_name = self._vae_hash = None
                return None
            entry = self.catalog.resolve("vae", name)
            from diffusers import AutoencoderKL

            try:
                vae = AutoencoderKL.from_single_file(str(entry.path), config=self._own_vae_config_dir(),
                                                     local_files_only=True, torch_dtype=self.dtype)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                from sdcloud.errors import CorruptFile

                raise CorruptFile(f"VAE '{name}' could not be loaded: {str(exc).splitlines()[0][:200]}") from None
            self._pipe.vae = vae.to(self.device)
            self.vae_name = Path(entry.name).name
            self._vae_hash = self.hashes.get(entry.path).short
            return self.vae_name

    def _own_vae_config_dir(self) -> str:
        folder = self.settings.state_path / "vae-config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(dict(self._own_vae.config)))
        return str(folder)

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (for tools and benches)."""
        return self._pipe

    # -- generation ------------------------------------------------------------------------
    def generate(self, req: GenerationRequest, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, preview: bool = False) -> GenerationResult:
        with self._lock:
            if req.model:
                self.load_model(req.model)
            elif self.current is None:
                self.load_model(self.settings.model or "demo")
            if req.vae is not None and req.vae != (self.vae_name or "Automatic"):
                self.load_vae(req.vae)
            assert self._ctx is not None and self._networks is not None and self.current is not None
            prompt, nets = extract_extra_networks(req.prompt)
            negative, neg_nets = extract_extra_networks(req.negative_prompt)
            hr_prompt, hr_nets = extract_extra_networks(req.hr_prompt)
            lora_hashes, changed = self._networks.apply_loras(nets + neg_nets + hr_nets)
            ti_hashes, ti_changed = self._networks.ensure_embeddings(prompt, negative)
            if changed or ti_changed:
                self._ctx.encoder.clear_cache()
            clean = dataclasses.replace(req, prompt=prompt, negative_prompt=negative, hr_prompt=hr_prompt)
            started = time.time()
            images, seeds, subseeds, interrupted, resolved = generate_images(
                self._ctx, clean, self.settings.limits, progress, cancel, preview)
            return self._result(req, images, seeds, subseeds, interrupted, resolved, lora_hashes, ti_hashes,
                                started)

    def _result(self, req: GenerationRequest, images: list, seeds: list[int], subseeds: list[int],
                interrupted: bool, resolved: dict[str, Any], lora_hashes: dict[str, str],
                ti_hashes: dict[str, str], started: float) -> GenerationResult:
        info = self.current
        assert info is not None
        hires = req.enable_hr and not req.is_img2img
        infotexts = []
        for seed, subseed in zip(seeds, subseeds, strict=True):
            params = generation_params(
                steps=req.steps, sampler=resolved["sampler"], schedule_type=resolved["schedule"],
                cfg_scale=req.cfg_scale, seed=seed, width=req.width, height=req.height,
                model_hash=info.short_hash, model=info.name, vae_hash=self._vae_hash,
                vae=self.vae_name, variation_seed=subseed, variation_seed_strength=req.subseed_strength,
                seed_resize_from=(req.seed_resize_from_w, req.seed_resize_from_h),
                denoising_strength=resolved["denoise"], clip_skip=req.clip_skip, tiling=req.tiling,
                hires_upscale=req.hr_scale if hires else None,
                hires_resize=(req.hr_resize_x, req.hr_resize_y) if hires and (req.hr_resize_x or req.hr_resize_y)
                else None,
                hires_steps=req.hr_second_pass_steps if hires else None,
                hires_upscaler=req.hr_upscaler if hires else None,
                hires_sampler=resolved["hr_sampler"] if hires and resolved["hr_sampler"] != resolved["sampler"]
                else None,
                hires_schedule_type=resolved["hr_schedule"]
                if hires and resolved["hr_schedule"] != resolved["schedule"] else None,
                hires_prompt=req.hr_prompt if hires and req.hr_prompt else None,
                hires_negative_prompt=req.hr_negative_prompt if hires and req.hr_negative_prompt else None,
                mask_blur=req.mask_blur if req.mask is not None else None,
                inpainting_fill=req.inpainting_fill if req.mask is not None else None,
                inpaint_full_res=req.inpaint_full_res, inpaint_full_res_padding=req.inpaint_full_res_padding,
                inpainting_mask_invert=bool(req.inpainting_mask_invert),
                lora_hashes=lora_hashes or None, ti_hashes=ti_hashes or None,
                extra={"RNG": "CPU", **({"Demo model": "random weights"} if info.is_demo else {})},
            )
            infotexts.append(build_infotext(req.prompt, req.negative_prompt, params))
        for image, text in zip(images, infotexts, strict=True):
            image.info["parameters"] = text
        total = req.batch_size * req.n_iter
        width, height = (resolved["hires_size"] or (req.width, req.height))
        js = {
            "prompt": req.prompt, "all_prompts": [req.prompt] * total,
            "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * total,
            "seed": resolved["all_seeds"][0], "all_seeds": resolved["all_seeds"],
            "subseed": resolved["all_subseeds"][0], "all_subseeds": resolved["all_subseeds"],
            "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
            "sampler_name": resolved["sampler"], "cfg_scale": req.cfg_scale, "steps": req.steps,
            "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": info.name, "sd_model_hash": info.short_hash, "sd_vae_name": self.vae_name,
            "sd_vae_hash": self._vae_hash, "seed_resize_from_w": req.seed_resize_from_w,
            "seed_resize_from_h": req.seed_resize_from_h, "denoising_strength": resolved["denoise"],
            "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": infotexts,
            "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
            "clip_skip": req.clip_skip, "is_using_inpainting_conditioning": info.variant == "inpaint",
            "version": f"sdcloud-{__version__}",
        }
        return GenerationResult(
            images=images, infotexts=infotexts, seeds=seeds, subseeds=subseeds,
            prompts=[req.prompt] * len(images), negative_prompts=[req.negative_prompt] * len(images),
            model_name=info.name, model_hash=info.short_hash, vae_name=self.vae_name, vae_hash=self._vae_hash,
            width=width, height=height, interrupted=interrupted, info=js,
        )

