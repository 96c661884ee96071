"""The ``txt2img`` / ``img2img`` job kinds: a JSON payload in, image files and A1111's
``info`` dict out. ``EngineHost`` puts every use of the one engine (generation and model
switches) under the GPU owner (``jobs/gpu.py``).

Payload: ``request`` (GenerationRequest fields without images), ``model`` / ``vae`` (keys to
load), ``init_images`` / ``mask`` (names of files stored with the job), ``save_images``,
``samples_format``, ``jpeg_quality``, ``return_grid``, ``preview_every``, ``styles``,
``parameters`` (the request as the client sent it, echoed back). Result: ``images`` (result
keys, grid first when there is one: outputs-folder keys for saved images, ``job:<name>``
for the others; see ``jobs.base.JOB_FILE``), ``info`` (A1111's info dict, with
``index_of_first_image``), ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sdcloud.engine.types import GenerationRequest, GenerationResult
from sdcloud.errors import BadRequest
from sdcloud.image_files import image_bytes, load_image, write_png_atomic
from sdcloud.jobs.base import JobContext, outputs_file
from sdcloud.jobs.control import Progress
from sdcloud.jobs.gpu import INTERACTIVE, GpuOwner
from sdcloud.settings import Settings

GenerationObserver = Callable[[Any, GenerationRequest, GenerationResult, float], None]
"""Called after each finished generation with (engine, request, result, seconds): the speed
recorder (``cloud/speed_recorder.py``) is one."""

GENERATION_KINDS = ("txt2img", "img2img")
SAVED_RECORD = "saved.json"  # in the job's output folder once its images are in the outputs folder
PLANNED_RECORD = "planned.json"  # the outputs-folder names chosen, written before the first image


class EngineHost:
    """Owns the engine and what is loaded in it; it is used only while holding ``gpu``."""

    def __init__(self, engine: Any, gpu: GpuOwner | None = None) -> None:
        self.engine = engine
        self.gpu = gpu or GpuOwner()
        self.model_key: str | None = None  # what was passed to engine.load_model
        self.vae_key: str | None = None

    def ensure_model(self, key: str | None) -> Any:
        """Load ``key`` unless it is already loaded; return the engine's ModelInfo."""
        with self.gpu.hold(INTERACTIVE):
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
        with self.gpu.hold(INTERACTIVE):
            if key != self.vae_key:
                self.engine.load_vae(key)
                self.vae_key = key

    def unload(self) -> None:
        with self.gpu.hold(INTERACTIVE):
            self.engine.unload()
            self.model_key = self.vae_key = None


def generation_payload(
    req: GenerationRequest,
    *,
    model: str | None,
    vae: str | None = None,
    init_images: Sequence[str] = (),
    mask: str | None = None,
    save_images: bool = True,
    send_images: bool = True,
    samples_format: str = "png",
    jpeg_quality: int = 80,
    return_grid: bool = True,
    preview_every: int = 0,
    styles: Sequence[str] = (),
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload of a ``txt2img``/``img2img`` job (see the module docstring); ``init_images``
    and ``mask`` name files given to ``JobQueue.submit(files=...)``."""
    return {
        "request": req.to_payload(),
        "model": model,
        "vae": vae,
        "init_images": list(init_images),
        "mask": mask,
        "styles": list(styles),
        "save_images": save_images,
        "send_images": send_images,
        "samples_format": samples_format,
        "jpeg_quality": jpeg_quality,
        "return_grid": return_grid,
        "preview_every": preview_every,
        "parameters": parameters if parameters is not None else {},
    }


class GenerationRunner:
    """Job handler for ``txt2img`` and ``img2img``."""

    def __init__(self, settings: Settings, host: EngineHost,
                 on_saved: Callable[[list[Path]], None] | None = None,
                 observers: list[GenerationObserver] | None = None,
                 on_image: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.host = host
        self.on_saved = on_saved  # the outbox: saved images are journaled before the job is done
        self.on_image = on_image  # images made, saved or not (the session's first image)
        self.observers = observers if observers is not None else []  # the caller's list: it may grow

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.payload
        saved = self._saved_before(ctx)
        if saved is not None:  # saved by a run that a crash cut off: finish without a second copy
            return saved
        # the model and VAE are loaded here (model/vae None: the engine keeps what is loaded)
        req = GenerationRequest.from_payload(
            p["request"],
            [load_image(ctx.input_path(n)) for n in p.get("init_images") or []],
            load_image(ctx.input_path(p["mask"])) if p.get("mask") else None,
        )
        if p.get("controlnet"):
            from sdcloud.controlnet.requests import load as load_units

            req.controlnet = load_units(p["controlnet"], ctx.input_path, load_image)
        if p.get("script"):  # X/Y/Z plot & co: many engine calls, one job (sdcloud.scripts)
            from sdcloud.scripts.runner import run_script

            return run_script(self, ctx, req)
        every = int(p.get("preview_every") or 0)

        def progress(pr: Progress) -> None:
            keep = every > 0 and (pr.step % every == 0 or pr.step == pr.steps)
            ctx.report(pr if keep else Progress(pr.step, pr.steps, pr.job, pr.job_count))

        with self.host.gpu.hold(INTERACTIVE):
            self.host.ensure_model(p.get("model"))
            self.host.ensure_vae(p.get("vae"))
            started = time.perf_counter()
            result = self.host.engine.generate(req, progress=progress, cancel=ctx.cancel, preview=every > 0)
            if p.get("restore_faces"):
                restore_faces(self.settings, self.host.engine, result, p["restore_faces"])
            seconds = time.perf_counter() - started
        for observe in self.observers:
            observe(self.host.engine, req, result, seconds)
        info = dict(result.info)
        info["styles"] = list(p.get("styles") or [])
        images = list(result.images)
        grid = None
        if p.get("save_images") and len(images) > 1 and p.get("return_grid", True):
            grid = make_grid(images, req.batch_size)
            grid.info["parameters"] = result.infotexts[0] if result.infotexts else ""
            info["infotexts"] = [grid.info["parameters"], *info.get("infotexts", result.infotexts)]
        info["index_of_first_image"] = 1 if grid is not None else 0
        keys, paths = self._write(ctx, result, grid, p)
        if self.on_image is not None and paths:
            self.on_image(Path(paths[0]).name if p.get("save_images") else f"{ctx.job.kind} (not saved)")
        out = {"images": keys, "info": info, "interrupted": bool(result.interrupted)}
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
        paths = [self.saved_file(key) for key in image_keys(out)]
        if not all(x.is_file() for x in paths):
            return None
        if self.on_saved is not None:
            self.on_saved(paths)
        return out

    def saved_file(self, key: str) -> Path:
        """The file of an outputs-folder result key (an absolute path from an older record as is)."""
        return Path(key) if Path(key).is_absolute() else outputs_file(self.settings.outputs_path, key)

    def _write(self, ctx: JobContext, result: GenerationResult, grid: Any, p: dict[str, Any]
               ) -> tuple[list[str], list[Path]]:
        """Saved images go to the outputs folder as PNG (A1111 layout, fsync'd); unsaved ones to
        the job's own folder in ``samples_format``, for the answer. Returns (keys, files)."""
        kind = "img2img" if ctx.job.kind == "img2img" else "txt2img"
        if p.get("save_images"):
            from sdcloud.durable import write_text_durable
            from sdcloud.outputs import output_dir, save_result

            plan = ctx.output_dir / PLANNED_RECORD
            planned = None
            if plan.is_file():  # an earlier attempt chose these names: write them again, no copies
                planned = [self.saved_file(key) for key in json.loads(plan.read_text(encoding="utf-8"))]
            root = self.settings.outputs_path
            saved = list(save_result(
                result, self.settings, kind=kind, paths=planned,
                on_plan=lambda chosen: write_text_durable(
                    plan, json.dumps([x.relative_to(root).as_posix() for x in chosen])),
            ))
            if grid is not None:
                grids = self.settings.outputs_path / f"{kind}-grids" / output_dir(self.settings, kind).name
                grids.mkdir(parents=True, exist_ok=True)
                grid_path = grids / f"grid-{Path(saved[0]).stem}.png"
                write_png_atomic(grid, grid_path, grid.info["parameters"])
                saved.insert(0, grid_path)
            return [x.relative_to(root).as_posix() for x in saved], saved
        fmt = p.get("samples_format", "png")
        quality = int(p.get("jpeg_quality", 80))
        ext = "jpg" if fmt == "jpeg" else fmt
        keys, paths = [], []
        for i, img in enumerate(result.images):
            path = ctx.output_dir / f"{i:05d}.{ext}"
            path.write_bytes(image_bytes(img, fmt, quality))
            keys.append(ctx.output_key(path.name))
            paths.append(path)
        return keys, paths


def image_keys(result: dict[str, Any] | None) -> Sequence[str]:
    """The image keys of a generation result (``paths``: absolute paths, from older versions)."""
    result = result or {}
    return result.get("images") or result.get("paths") or []


def face_restorers(settings: Settings, engine: Any) -> Any:
    """The engine's ``FaceRestorers`` (one per engine, so per runtime: a model loads once and
    stays loaded); an engine without one (a test double) gets one kept on it."""
    faces = getattr(engine, "faces", None)
    if faces is None:
        from sdcloud.upscalers.faces import FaceRestorers

        faces = FaceRestorers(settings.models_root, getattr(engine, "device", None))
        with contextlib.suppress(AttributeError):
            engine.faces = faces
    return faces


def restore_faces(settings: Settings, engine: Any, result: GenerationResult, model: str) -> None:
    """``restore_faces``: each image through the face restorer, in place; as A1111 does, the
    infotext says ``Face restoration: <name>`` (after the seed) and the info names the model."""
    from sdcloud.infotext import add_param

    faces = face_restorers(settings, engine)
    name = faces.find(model).name
    images, texts = [], []
    for i, img in enumerate(result.images):
        fixed = faces.restore(img, model)
        fixed.info.update({k: v for k, v in img.info.items() if isinstance(v, str)})
        text = img.info.get("parameters") or (result.infotexts[i] if i < len(result.infotexts) else None)
        if isinstance(text, str):
            fixed.info["parameters"] = text = add_param(text, "Face restoration", name, after="Seed")
            texts.append(text)
        images.append(fixed)
    result.images = images
    if len(texts) == len(result.infotexts):
        result.infotexts = texts
        if "infotexts" in result.info:
            result.info["infotexts"] = list(texts)
    result.info.update(restore_faces=True, face_restoration_model=name)


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
