"""The ``txt2img`` / ``img2img`` job kinds: a JSON payload in, image files and A1111's
``info`` dict out. ``EngineHost`` serialises every use of the one engine (generation and
model switches) behind one lock.

Payload: ``request`` (GenerationRequest fields without images), ``init_images`` / ``mask``
(names of files stored with the job), ``save_images``, ``samples_format``, ``jpeg_quality``,
``return_grid``, ``previews``. Result: ``paths`` (image files, grid first when there is one),
``info`` (A1111's info dict), ``index_of_first_image``, ``interrupted``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.engine.types import GenerationRequest, GenerationResult, Progress
from sdcloud.errors import BadRequest
from sdcloud.image_files import image_bytes, load_image, write_png_atomic
from sdcloud.jobs.base import JobContext
from sdcloud.settings import Settings

SAVED_RECORD = "saved.json"  # in the job's output folder once its images are in the outputs folder


class EngineHost:
    """Owns the engine and what is loaded in it; ``lock`` is held while it is used."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.lock = threading.RLock()
        self.model_key: str | None = None  # what was passed to engine.load_model
        self.vae_key: str | None = None

    def ensure_model(self, key: str | None) -> Any:
        """Load ``key`` unless it is already loaded; return the engine's ModelInfo."""
        with self.lock:
            if key is None:
                if self.engine.current is None:
                    raise BadRequest(
                        "no model is loaded; start the server with --model NAME (or --model demo) "
                        "or set the option sd_model_checkpoint"
                    )
                return self.engine.current
            if key != self.model_key or self.engine.current is None:
                self.model_key = None
                info = self.engine.load_model(key)
                self.model_key, self.vae_key = key, None
                return info
            return self.engine.current

    def ensure_vae(self, key: str | None) -> None:
        with self.lock:
            if key != self.vae_key:
                self.engine.load_vae(key)
                self.vae_key = key

    def unload(self) -> None:
        with self.lock:
            self.engine.unload()
            self.model_key = self.vae_key = None


class GenerationRunner:
    """Job handler for ``txt2img`` and ``img2img``."""

    def __init__(self, settings: Settings, host: EngineHost,
                 on_saved: Callable[[list[Path]], None] | None = None) -> None:
        self.settings = settings
        self.host = host
        self.on_saved = on_saved  # the outbox: saved images are journaled before the job is done

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.payload
        saved = self._saved_before(ctx)
        if saved is not None:  # saved by a run that a crash cut off: finish without a second copy
            return saved
        fields = dict(p["request"])
        if p.get("init_images"):
            fields["init_images"] = [load_image(ctx.input_path(n)) for n in p["init_images"]]
        if p.get("mask"):
            fields["mask"] = load_image(ctx.input_path(p["mask"]))
        # the model and VAE are loaded here, so the engine is told to keep what is loaded
        req = GenerationRequest(**{**fields, "model": None, "vae": None})
        every = int(p.get("preview_every") or 0)

        def progress(pr: Progress) -> None:
            keep = every > 0 and (pr.step % every == 0 or pr.step == pr.steps)
            ctx.report(pr if keep else Progress(pr.step, pr.steps, pr.job, pr.job_count))

        with self.host.lock:
            self.host.ensure_model(p.get("model"))
            self.host.ensure_vae(p.get("vae"))
            started = time.perf_counter()
            result = self.host.engine.generate(req, progress=progress, cancel=ctx.cancel, preview=every > 0)
            record_speed(self.settings, self.host.engine, req, result, time.perf_counter() - started)
        info = dict(result.info)
        info["styles"] = list(p.get("styles") or [])
        images = list(result.images)
        grid = None
        if p.get("save_images") and len(images) > 1 and p.get("return_grid", True):
            grid = make_grid(images, req.batch_size)
            grid.info["parameters"] = result.infotexts[0] if result.infotexts else ""
            info["infotexts"] = [grid.info["parameters"], *info.get("infotexts", result.infotexts)]
        info["index_of_first_image"] = 1 if grid is not None else 0
        paths = self._write(ctx, result, grid, p)
        out = {"paths": [str(x) for x in paths], "info": info, "interrupted": bool(result.interrupted)}
        if p.get("save_images"):
            from sdcloud.durable import write_text_durable

            write_text_durable(ctx.output_dir / SAVED_RECORD, json.dumps(out))
            if self.on_saved is not None:
                self.on_saved(paths)
        return out

    def _saved_before(self, ctx: JobContext) -> dict[str, Any] | None:
        """The result an earlier attempt of this job saved to the outputs folder, if all its
        files are there; journaled for upload again (the same store keys: no duplicate)."""
        record = ctx.output_dir / SAVED_RECORD
        if not record.is_file():
            return None
        out = json.loads(record.read_text(encoding="utf-8"))
        paths = [Path(x) for x in out["paths"]]
        if not all(x.is_file() for x in paths):
            return None
        if self.on_saved is not None:
            self.on_saved(paths)
        return out

    def _write(self, ctx: JobContext, result: GenerationResult, grid: Any, p: dict[str, Any]) -> list[Path]:
        """Saved images go to the outputs folder as PNG (A1111 layout, fsync'd); unsaved ones to
        the job's own folder in ``samples_format``, for the answer."""
        kind = "img2img" if ctx.job.kind == "img2img" else "txt2img"
        if p.get("save_images"):
            from sdcloud.outputs import output_dir, save_result

            saved = save_result(result, self.settings, kind=kind)
            if grid is None:
                return list(saved)
            grids = self.settings.outputs_path / f"{kind}-grids" / output_dir(self.settings, kind).name
            grids.mkdir(parents=True, exist_ok=True)
            grid_path = grids / f"grid-{Path(saved[0]).stem}.png"
            write_png_atomic(grid, grid_path, grid.info["parameters"])
            return [grid_path, *saved]
        fmt = p.get("samples_format", "png")
        quality = int(p.get("jpeg_quality", 80))
        ext = "jpg" if fmt == "jpeg" else fmt
        paths = []
        for i, img in enumerate(result.images):
            path = ctx.output_dir / f"{i:05d}.{ext}"
            path.write_bytes(image_bytes(img, fmt, quality))
            paths.append(path)
        return paths


def make_grid(images: list[Any], batch_size: int) -> Any:
    """A1111's default grid: rows = floor(sqrt(n)) reduced until it divides n."""
    from PIL import Image

    n = len(images)
    rows = max(1, int(math.sqrt(n)))
    while n % rows:
        rows -= 1
    cols = math.ceil(n / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


_gpu_names: dict[str, str | None] = {}


def record_speed(settings: Settings, engine: Any, req: GenerationRequest, result: GenerationResult,
                 seconds: float) -> None:
    """Feed ``sdcloud plan`` real throughput: one line per finished job on a GPU the price
    catalog knows (CPU runs and demo models are not measurements of anything)."""
    current = getattr(engine, "current", None)
    if (getattr(engine, "device", None) is None or engine.device.type != "cuda" or current is None
            or current.is_demo or result.interrupted or not result.images or req.is_img2img or req.enable_hr):
        return
    import torch

    from sdcloud.cloud.price_catalog import load_price_catalog
    from sdcloud.cloud.throughput import record_measurement

    name = torch.cuda.get_device_name(engine.device)
    if name not in _gpu_names:
        _gpu_names[name] = load_price_catalog().gpu_for_device_name(name)
    gpu = _gpu_names[name]
    if gpu is None:
        return
    family = "sdxl" if current.family.startswith("sdxl") else "sd15"
    record_measurement(settings.state_path, gpu=gpu, family=family, steps=req.steps, width=req.width,
                       height=req.height, seconds=seconds / len(result.images))
