"""img2img *Batch* (A1111's sub-tab): every image of a folder on the server's disk through the
same img2img request, results written to an output folder, optionally with an inpaint mask
per image from a mask folder.

Folders are confined: a path must be inside the data folder or a folder the operator allowed
(``serve --allow-batch-dir``), never in sdcloud's own state; relative paths are taken from
the data folder. Each image is one ordinary img2img job in the queue (so fleet workers can
run it and the Queue tab shows it); a thread on the server submits them one after another
and copies each result into the output folder, so the batch goes on when the browser closes.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcloud.durable import atomic_write
from sdcloud.errors import BadRequest, NotFound, SdcloudError
from sdcloud.image_files import encode_image, load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
TERMINAL = ("done", "failed", "cancelled")
POLL_SECONDS = 0.2


def batch_roots(settings: Any) -> list[Path]:
    """Folders a batch may use: the data folder and the ``--allow-batch-dir`` ones."""
    return [Path(settings.data_dir).resolve(), *(Path(p).resolve() for p in settings.batch_dirs or ())]


def confine(text: str, settings: Any, what: str, *, must_exist: bool) -> Path:
    """``text`` as an absolute folder inside :func:`batch_roots`, or ``BadRequest`` saying why.

    Relative paths start at the data folder; symlinks are resolved before the check, so a
    link cannot lead out. sdcloud's state folder is refused even inside the data folder.
    """
    raw = (text or "").strip()
    if not raw:
        raise BadRequest(f"{what}: give a folder")
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    try:
        path = Path(os.path.expanduser(raw))
        if not path.is_absolute():
            path = Path(settings.data_dir) / path
        path = path.resolve()
        roots = batch_roots(settings)
        state = Path(settings.state_path).resolve()
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError, RuntimeError):  # NUL byte, name too long, symlink loop
        raise BadRequest(f"{what} {shown!r} is not a usable folder name") from None
    # the message names no server folder: the data folder's path is not the client's business
    if not any(path == root or root in path.parents for root in roots):
        raise BadRequest(f"{what} {shown!r} is outside the folders batch may use (the data folder and "
                         "those allowed with --allow-batch-dir)")
    if path == state or state in path.parents:
        raise BadRequest(f"{what} {shown!r} is sdcloud's own state folder; pick another")
    if must_exist and not is_dir:
        raise BadRequest(f"{what} {shown!r} is not a folder on the server")
    if exists and not is_dir:
        raise BadRequest(f"{what} {shown!r} is a file, not a folder")
    return path


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise BadRequest(f"cannot read the folder {folder.name!r}: {exc.strerror}") from None


def mask_for(image: Path, masks: Sequence[Path]) -> Path | None:
    """The mask of ``image`` as A1111 finds it: the only file of the mask folder, else the one
    with the same name stem (any image type); ``None`` when there is none."""
    if len(masks) == 1:
        return masks[0]
    return next((m for m in masks if m.stem == image.stem), None)


def output_names(stem: str, count: int, suffix: str) -> list[str]:
    """Output file names for the ``count`` images made from input ``stem`` (A1111: the input's
    name, then ``-1``, ``-2`` ... for more images of the same input)."""
    return [f"{stem}{'' if i == 0 else f'-{i}'}{suffix}" for i in range(count)]


@dataclass
class BatchRun:
    """One batch: what it will do and how far it got (``view`` is what clients see)."""

    id: str
    inputs: list[Path]
    output_dir: Path
    masks: dict[str, Path | None]
    state: str = "running"  # running | done | cancelled | failed
    index: int = 0  # images finished (done, failed or skipped)
    job_id: str | None = None  # the job of the image being made
    written: list[str] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)  # the same images in the outputs folder (for the UI)
    errors: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    def view(self, job: Any = None) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "total": len(self.inputs), "finished": self.index,
            "job": self.job_id, "output_dir": str(self.output_dir), "written": list(self.written),
            "errors": list(self.errors),
            "step": getattr(job, "step", 0) if job is not None else 0,
            "steps": getattr(job, "steps", 0) if job is not None else 0,
        }


class BatchRunner:
    """Starts batches and keeps them (the last ones) for progress queries."""

    def __init__(self, services: Any, keep: int = 20) -> None:
        self.services = services
        self.keep = keep
        self.runs: dict[str, BatchRun] = {}
        self._lock = threading.Lock()

    def start(self, request: dict[str, Any], input_dir: str, output_dir: str, mask_dir: str = "",
              scale: float | None = None) -> BatchRun:
        """Check the folders, queue the first image and go on with the rest in a thread.

        ``request`` is an img2img body (its ``init_images``/``mask`` are replaced per image);
        with ``scale`` (*Resize by*) each image's own size times ``scale`` is used. Whatever
        the request or the folders get wrong raises here (a 4xx), before anything runs.
        """
        settings = self.services.settings
        source = confine(input_dir, settings, "Input directory", must_exist=True)
        target = confine(output_dir, settings, "Output directory", must_exist=False)
        inputs = list_images(source)
        if not inputs:
            raise BadRequest(f"Input directory {input_dir!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        masks: dict[str, Path | None] = {}
        if (mask_dir or "").strip():
            folder = confine(mask_dir, settings, "Inpaint batch mask directory", must_exist=True)
            files = list_images(folder)
            if not files:
                raise BadRequest(f"Inpaint batch mask directory {mask_dir!r} has no images")
            masks = {p.name: mask_for(p, files) for p in inputs}
        if target == source:
            raise BadRequest("Output directory is the input directory; pick another so no input is overwritten")
        run = BatchRun(id=uuid.uuid4().hex[:12], inputs=inputs, output_dir=target, masks=masks)
        body = {k: v for k, v in request.items() if k not in ("init_images", "mask")}
        first_job = None
        while run.index < len(inputs) and first_job is None:  # the first image that makes a request
            first = self._request(run, inputs[run.index], body, scale)
            if first is None:
                run.index += 1
                continue
            first_job = self.services.submit("img2img", first)  # a bad request is refused here
        if first_job is None:
            raise BadRequest("no image of the batch could be used: " + "; ".join(run.errors[:3]))
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.services.cancel(first_job.id)
            raise BadRequest(f"Output directory {output_dir!r} cannot be made: {exc.strerror}") from None
        run.job_id = first_job.id
        with self._lock:
            self.runs[run.id] = run
            for old in list(self.runs)[:-self.keep]:
                del self.runs[old]
        threading.Thread(target=self._run, args=(run, body, scale), name=f"img2img-batch-{run.id}",
                         daemon=True).start()
        return run

    def get(self, batch_id: str) -> BatchRun:
        run = self.runs.get(batch_id)
        if run is None:
            raise NotFound(f"img2img batch '{batch_id}' not found")
        return run

    def view(self, batch_id: str) -> dict[str, Any]:
        run = self.get(batch_id)
        job = None
        if run.job_id is not None:
            try:
                job = self.services.job(run.job_id)
            except NotFound:
                job = None
        return run.view(job)

    def stop(self, batch_id: str) -> BatchRun:
        """Interrupt: the image being made stops, the rest are not started."""
        run = self.get(batch_id)
        run.cancel.set()
        if run.job_id is not None:
            try:
                self.services.cancel(run.job_id)
            except SdcloudError:  # the job finished meanwhile
                pass
        return run

    # the thread ---------------------------------------------------------------------------
    def _run(self, run: BatchRun, body: dict[str, Any], scale: float | None) -> None:
        try:
            while run.index < len(run.inputs):
                path = run.inputs[run.index]
                if run.job_id is None:  # the first one was queued by start()
                    if run.cancel.is_set():
                        break
                    request = self._request(run, path, body, scale)
                    if request is not None:
                        try:
                            run.job_id = self.services.submit("img2img", request).id
                        except SdcloudError as exc:
                            run.errors.append(f"{path.name}: {exc}")
                if run.job_id is not None:
                    self._finish(run, path, _wait(self.services.job, run.job_id))
                    run.job_id = None
                run.index += 1
            run.state = "cancelled" if run.cancel.is_set() else "done"
        except Exception as exc:  # noqa: BLE001 - shown to the user; the server goes on
            run.errors.append(f"batch stopped: {exc}")
            run.state = "failed"
        finally:
            run.job_id = None

    def _request(self, run: BatchRun, path: Path, body: dict[str, Any], scale: float | None
                 ) -> dict[str, Any] | None:
        """The img2img body for one input, or ``None`` (with the reason in ``run.errors``)."""
        try:
            image = load_image(path)
            mask_path = run.masks.get(path.name) if run.masks else None
            if run.masks and mask_path is None:
                run.errors.append(f"{path.name}: no mask with that name in the mask folder; skipped")
                return None
            mask = load_image(mask_path) if mask_path is not None else None
        except OSError as exc:
            run.errors.append(f"{path.name}: not readable as an image ({exc})")
            return None
        request = {**body, "init_images": [encode_image(image.convert("RGB"))]}
        if mask is not None:
            request["mask"] = encode_image(mask)
        if scale:
            request["width"], request["height"] = scaled_size(image.size, scale)
        return request

    def _finish(self, run: BatchRun, path: Path, job: Any) -> None:
        """Copy a finished job's images (not the grid) to the output folder, named after ``path``."""
        if job.state != "done":
            run.errors.append(f"{path.name}: {job.error or job.state}")
            return
        files = [Path(p) for p in self.services.runtime.image_files(job)]
        first = int(((job.result or {}).get("info") or {}).get("index_of_first_image", 0) or 0)
        files = files[first:] or files
        names = output_names(path.stem, len(files), files[0].suffix if files else ".png")
        for name, src in zip(names, files, strict=True):
            _copy_atomic(src, run.output_dir / name)
            run.written.append(name)
            run.saved.append(src)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """A1111's *Resize by*: each side times ``scale``, rounded down to a multiple of 8."""
    width, height = (int(side * float(scale)) for side in size)
    return width - width % 8, height - height % 8


def _wait(get: Callable[[str], Any], job_id: str) -> Any:
    job = get(job_id)
    while job.state not in TERMINAL:
        time.sleep(POLL_SECONDS)
        job = get(job_id)
    return job


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy via a temp file, fsync and rename: a crash leaves no half-written output."""
    with open(src, "rb") as fh_in, atomic_write(dest) as fh_out:
        shutil.copyfileobj(fh_in, fh_out)
