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
from sdcloud.checkpoints.local_copy import local_copy
from sdcloud.controlnet.models import ControlNetCache
from sdcloud.engine import loader, residency
from sdcloud.engine.conditioning import PromptEncoder
from sdcloud.engine.demo import build_demo_pipeline
from sdcloud.engine.loader import DEMO_KINDS, ModelInfo
from sdcloud.engine.networks import NetworkManager
from sdcloud.engine.sampling_loop import ExtraModels, ModelContext, Refiner, generate_images
from sdcloud.engine.types import GenerationRequest, GenerationResult
from sdcloud.errors import NotFound
from sdcloud.infotext import build_infotext, generation_params
from sdcloud.jobs.control import CancelToken, ProgressCallback
from sdcloud.prompt_syntax import extract_extra_networks
from sdcloud.settings import Settings
from sdcloud.upscalers import Upscalers

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
        self._local: dict[Path, tuple[Path, str]] = {}  # checkpoint -> (the file read, how it got there)
        # checkpoints a request uses beside the main model (refiner, hires checkpoint), by name
        self._extra: dict[str, tuple[ModelContext, ModelInfo]] = {}
        self.compile_cache_status: str | None = None
        self.upscalers = Upscalers(settings.models_root, self.device, self.dtype)
        from sdcloud.upscalers.faces import FaceRestorers

        self.faces = FaceRestorers(settings.models_root, self.device)  # one per engine: a model loads once

    def fetch_local(self, name: str) -> str:
        """Make checkpoint ``name`` readable from local disk (a copy from a slow mount, made
        once and reused); says what happened. Demo models are built in memory."""
        if name in DEMO_KINDS:
            return "built in memory"
        return self._local_path(self.resolve_model_path(name))[1]

    def _local_path(self, path: Path) -> tuple[Path, str]:
        if path not in self._local or not self._local[path][0].is_file():
            self._local[path] = local_copy(path, self.settings.local_cache_path, mode=self.settings.model_copy)
        return self._local[path]

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
            if path is not None:
                loader.refuse_refiner(path)  # ... and so is a refiner
            self.unload()  # free the old model before building the new one
            if path is None:
                kind = DEMO_KINDS[name]
                return self._install(build_demo_pipeline(kind),
                                     ModelInfo(name, name, None, None, "sdxl" if kind == "sdxl" else "sd1",
                                               "inpaint" if kind.endswith("inpaint") else "base", "epsilon", True))
            return self._install(*self._load_file(path))

    def _load_file(self, path: Path, refiner: bool = False) -> tuple[Any, ModelInfo]:
        read_path, _how = self._local_path(path) if path.is_file() else (path, "local")
        pipe, arch, prediction = loader.load_any(read_path, self.dtype, refiner)
        sha = self._sha256(path, read_path) if path.is_file() else None
        stem = path.stem if path.is_file() else path.name
        try:
            rel = path.resolve().relative_to(self.settings.checkpoints_path.resolve()).as_posix()
        except ValueError:
            rel = path.name
        title = f"{rel} [{sha[:10]}]" if sha else rel
        return pipe, ModelInfo(stem, title, str(path), sha, arch.family, arch.variant, prediction)

    def _sha256(self, path: Path, read_path: Path) -> str:
        """The checkpoint's hash, from the cache (restored from the store on a new machine),
        else computed from the local copy and recorded for the original file."""
        cached = self.hashes.get(path, compute=False)
        if cached is None:
            cached = self.hashes.get(read_path)
            if read_path != path:
                self.hashes.put(path, cached)
        return cached.sha256

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
            from sdcloud.engine.compile_cache import load_artifacts

            self.compile_cache_status = load_artifacts(self.settings.state_path)
            pipe.unet = torch.compile(pipe.unet)
        self._pipe = pipe
        self._ctx = ModelContext(pipe, info.family, info.variant, self.device, self.dtype,
                                 PromptEncoder(pipe, info.family), self.upscalers,
                                 ControlNetCache(self.settings.models_root / "ControlNet", pipe.unet))
        self._networks = NetworkManager(pipe, self.catalog, self.hashes)
        self._own_vae = pipe.vae
        self.vae_name, self._vae_hash = None, None
        self.current = info
        log.info("loaded %s (%s %s, %s)", info.title, info.family, info.variant, self.device)
        return info

    def unload(self) -> None:
        """Free the current model and the other checkpoints loaded beside it (RAM and VRAM)."""
        with self._lock:
            self._pipe = self._ctx = self._networks = None
            self._extra.clear()
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

    # -- other checkpoints of a request ----------------------------------------------------
    def _same_as_main(self, name: str) -> bool:
        cur = self.current
        assert cur is not None
        bare = name[: name.rindex(" [")] if name.endswith("]") and " [" in name else name
        return name in (cur.name, cur.title, cur.path, cur.short_title) or bare in (cur.name, cur.title)

    def extra_model(self, name: str | None) -> tuple[ModelContext, ModelInfo] | None:
        """The refiner or hires checkpoint ``name`` (catalog name, ``name [hash]``, a demo name),
        loaded beside the main model and kept while requests use it; None for the main model
        itself (or no name). Its weights start in CPU RAM on a GPU machine: ``_use`` moves them."""
        name = (name or "").strip()
        if not name or name in ("None", "none", "Use same checkpoint") or self._same_as_main(name):
            return None
        if name in self._extra:
            return self._extra[name]
        bare = name[: name.rindex(" [")] if name.endswith("]") and " [" in name else name
        path = None if bare in DEMO_KINDS else self.resolve_model_path(name)
        if path is not None and self.current is not None and str(path) == self.current.path:
            return None  # the main model under another of its names
        if path is None:
            kind = DEMO_KINDS[bare]
            pipe = build_demo_pipeline(kind)
            info = ModelInfo(bare, bare, None, None, "sdxl" if kind == "sdxl" else "sd1",
                             "inpaint" if kind.endswith("inpaint") else "base", "epsilon", True)
        else:
            pipe, info = self._load_file(path, refiner=True)
        pipe.set_progress_bar_config(disable=True)
        memory = self.settings.memory if self.device.type == "cuda" else "none"
        resident = self.device.type != "cuda"
        if memory == "medvram":
            pipe.enable_model_cpu_offload()
            resident = True
        elif memory == "lowvram":
            pipe.enable_sequential_cpu_offload()
            resident = True
        else:
            pipe.to(torch.device("cpu") if self.device.type == "cuda" else self.device, self.dtype)
        ctx = ModelContext(pipe, info.family, info.variant, self.device, self.dtype,
                           PromptEncoder(pipe, info.family), title=info.short_title, resident=resident)
        self._extra[name] = (ctx, info)
        log.info("loaded %s beside %s (%s)", info.title, self.current.title if self.current else "-", info.family)
        return self._extra[name]

    def load_extra_pipeline(self, name: str, pipe: Any, info: ModelInfo) -> None:
        """Use a pipeline built elsewhere as the refiner / hires checkpoint ``name`` (benches);
        on a GPU machine it is treated as a loaded one: its weights wait where they are until
        ``_use`` moves them (pass it in CPU RAM to start parked, as a loaded one does)."""
        with self._lock:
            on_device = next(pipe.unet.parameters()).device.type == self.device.type
            ctx = ModelContext(pipe, info.family, info.variant, self.device, self.dtype,
                               PromptEncoder(pipe, info.family), title=info.short_title,
                               resident=on_device or self.device.type != "cuda")
            self._extra[name] = (ctx, info)

    def _keep_extra(self, names: set[str]) -> None:
        """Free the other checkpoints this request does not use (before loading its own)."""
        for key in [k for k in self._extra if k not in names]:
            del self._extra[key]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _settle_extra(self) -> None:
        """After a generation the other checkpoints stay on the GPU only while that leaves room
        for the next image's activations (``residency.HEADROOM``); else they wait in CPU RAM."""
        if self.device.type != "cuda" or not self._extra or self.settings.memory in ("medvram", "lowvram"):
            return  # (with offload, diffusers' hooks move the weights)
        if torch.cuda.mem_get_info(self.device)[0] < residency.HEADROOM:
            for ctx, _info in self._extra.values():
                if ctx.resident and ctx.pipe is not None and ctx is not self._ctx:
                    residency.place(ctx.pipe, "cpu")
                    ctx.resident = False
            torch.cuda.empty_cache()

    def _use(self, ctx: ModelContext) -> None:
        """The GPU-memory rule (``engine.residency``): ``ctx``'s model on the GPU, others parked if short."""
        if ctx.resident:
            return
        others = [c for c in (self._ctx, *(c for c, _ in self._extra.values())) if c is not None]
        if residency.make_resident(ctx, others, self.device):
            log.info("parked the other models in CPU RAM to run %s (not enough free GPU memory for both)",
                     ctx.title or "the main model")

    def _extra_models(self, req: GenerationRequest) -> tuple[ExtraModels, dict[str, ModelInfo]]:
        names = {n for n in (req.refiner_checkpoint, req.hr_checkpoint_name if req.enable_hr else None) if n}
        if names:  # a request without one keeps them (an X/Y/Z plot alternates "None" and a refiner)
            self._keep_extra({n.strip() for n in names})
        infos: dict[str, ModelInfo] = {}
        models = ExtraModels(refiner_passes=req.hires_fix_refiner_pass, use=self._use)
        if req.refiner_checkpoint and req.refiner_switch_at < 1.0:
            loaded = self.extra_model(req.refiner_checkpoint)
            if loaded is not None:
                models.refiner = Refiner(loaded[0], req.refiner_switch_at, req.refiner_switch_by_sample_steps)
                infos["refiner"] = loaded[1]
        if req.enable_hr and not req.is_img2img and req.hr_checkpoint_name:
            loaded = self.extra_model(req.hr_checkpoint_name)
            if loaded is not None:
                models.hires = loaded[0]
                infos["hires"] = loaded[1]
        return models, infos

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
            models, infos = self._extra_models(clean)
            try:
                images, seeds, subseeds, interrupted, resolved = generate_images(
                    self._ctx, clean, self.settings.limits, progress, cancel, preview, models=models)
            finally:
                self._use(self._ctx)  # outside a generation the main model is on the GPU
                self._settle_extra()
            resolved["models"] = infos
            resolved["comments"] = list(self._networks.comments)  # skipped networks (A1111 goes on too)
            resolved["controlnet"] = {f"ControlNet {i}": u.infotext(u.model) for i, u in enumerate(req.controlnet)}
            return self._result(req, images, seeds, subseeds, interrupted, resolved, lora_hashes, ti_hashes,
                                started)

    def _hires_checkpoint_title(self, req: GenerationRequest, resolved: dict[str, Any]) -> str | None:
        """A1111 writes ``Hires checkpoint`` whenever the request names one (the main model too)."""
        hires = resolved.get("models", {}).get("hires")
        if hires is not None:
            return hires.short_title
        named = (req.hr_checkpoint_name or "").strip()
        if named and named not in ("None", "none", "Use same checkpoint") and self.current is not None:
            return self.current.short_title
        return None

    @staticmethod
    def _refiner_params(req: GenerationRequest, resolved: dict[str, Any]) -> dict[str, object]:
        """``Refiner``/``Refiner switch at`` once sampling switched to it (A1111 writes them then)."""
        refiner = resolved.get("models", {}).get("refiner")
        if refiner is None or not resolved.get("refined"):
            return {}
        out: dict[str, object] = {"Refiner": refiner.short_title, "Refiner switch at": req.refiner_switch_at}
        if req.enable_hr and not req.is_img2img and req.hires_fix_refiner_pass != "second pass":
            out["Hires refiner"] = req.hires_fix_refiner_pass
        if req.refiner_switch_by_sample_steps:
            out["Refiner switch by sampling steps"] = "True"
        return out

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
                if hires and resolved["hr_schedule_label"] != resolved["schedule_label"] else None,
                hires_checkpoint=self._hires_checkpoint_title(req, resolved) if hires else None,
                hires_prompt=req.hr_prompt if hires and req.hr_prompt and req.hr_prompt != req.prompt else None,
                hires_negative_prompt=req.hr_negative_prompt
                if hires and req.hr_negative_prompt and req.hr_negative_prompt != req.negative_prompt else None,
                mask_blur=req.mask_blur if req.mask is not None else None,
                inpainting_fill=req.inpainting_fill if req.mask is not None else None,
                inpaint_full_res=req.inpaint_full_res, inpaint_full_res_padding=req.inpaint_full_res_padding,
                inpainting_mask_invert=bool(req.inpainting_mask_invert),
                lora_hashes=lora_hashes or None, ti_hashes=ti_hashes or None,
                extra={**resolved.get("params", {}), **self._refiner_params(req, resolved),
                       "RNG": "CPU", **({"Demo model": "random weights"} if info.is_demo else {}),
                       **resolved.get("controlnet", {}),
                       **dict(c.split(": ", 1) for c in resolved.get("comments", []))},
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
            "comments": "".join(f"{c}\n" for c in resolved.get("comments", [])),
        }
        return GenerationResult(
            images=images, infotexts=infotexts, seeds=seeds, subseeds=subseeds,
            prompts=[req.prompt] * len(images), negative_prompts=[req.negative_prompt] * len(images),
            model_name=info.name, model_hash=info.short_hash, vae_name=self.vae_name, vae_hash=self._vae_hash,
            width=width, height=height, interrupted=interrupted, info=js,
        )

