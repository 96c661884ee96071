"""LoRA training for the HTTP API and the UI: datasets live in ``<data dir>/datasets/<name>``
(uploaded through the API or copied there), requests are checked up front (options, dataset,
model) and queued as ``train-lora`` jobs; status adds the live loss curve and sample images.

Requests name datasets by folder name only; no path from a request reaches the file system.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sdcloud.errors import BadRequest, NotFound, SdcloudError, TooLarge, redact_paths
from sdcloud.jobs import Job, JobQueue
from sdcloud.jobs.training import KIND, TrainRunner
from sdcloud.settings import Settings
from sdcloud.training.dataset import IMAGE_EXTS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
_FOLDER = re.compile(r"^(\d+_)?[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
CAPTION_EXTS = (".txt", ".caption")
MAX_UPLOAD_FILES = 5000

log = logging.getLogger(__name__)


class TrainRequest(BaseModel):
    """``/api/train``: the CLI's options (``sdcloud train lora``), with the dataset as a folder name."""

    dataset: str = Field(description="a folder in <data dir>/datasets (see /api/train/datasets)")
    model: str = Field("demo", description="checkpoint name as /sdapi/v1/sd-models lists it, or demo / demo-xl")
    name: str = Field(description="output name: models/Lora/NAME.safetensors")
    resume: bool = Field(False, description="continue from the saved state of NAME")
    restart: bool = Field(False, description="start over, dropping the saved state of an unfinished run")
    preset: str | None = Field(None, description="memory preset (see /api/train/presets)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="any other option of 'sdcloud train lora' (steps, rank, alpha, lr, "
                                                "resolution, batch, seed, optimizer, ...)")


def _leaf(fname: str) -> str:
    return fname.replace("\\", "/").rsplit("/", 1)[-1]


def _too_large(size: int, cap: int, *, counted: bool = False) -> str:
    size_text = f"more than {cap} bytes (more than its zip headers say)" if counted else f"{size} bytes"
    return (f"the upload unpacks to {size_text}; at most {cap} bytes are accepted per upload "
            "(setting limits.max_dataset_upload_bytes); upload the dataset in parts")


def _plain(name: str, what: str, pattern: re.Pattern[str] = _NAME) -> str:
    name = (name or "").strip()
    if not pattern.match(name) or ".." in name:
        raise BadRequest(f"{what} {name!r} must be a plain folder name (letters, digits, space, '-', '_', '.')")
    return name


class TrainingService:
    def __init__(self, settings: Settings, queue: JobQueue, runner: TrainRunner) -> None:
        self.settings = settings
        self.queue = queue
        self.runner = runner
        self.root = settings.data_dir / "datasets"

    # datasets ----------------------------------------------------------------------------
    def datasets(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        return [{"name": p.name} for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def dataset_path(self, name: str) -> Path:
        path = self.root / _plain(name, "dataset")
        if not path.is_dir():
            raise NotFound(f"dataset '{name}' not found in the data folder's datasets/; upload it first "
                           "(/api/train/datasets)")
        return path

    def upload(self, name: str, files: list[tuple[str, bytes]], folder: str = "") -> dict[str, Any]:
        """Store images and captions (or one .zip of them) under ``datasets/<name>[/<folder>]``.

        Bounded and all-or-nothing: at most ``MAX_UPLOAD_FILES`` files and
        ``limits.max_dataset_upload_bytes`` once unpacked (zip headers are checked first, and
        the bytes are counted while inflating, since headers can lie). Everything is written to
        a hidden temp folder first and moved into the dataset only when all of it was accepted."""
        base = self.root / _plain(name, "dataset")
        sub_base = _plain(folder, "folder", _FOLDER) if folder else ""
        cap = self.settings.limits.max_dataset_upload_bytes
        sources: list[tuple[str, Any]] = []  # (file name, bytes or (zip, ZipInfo))
        zips: list[zipfile.ZipFile] = []
        try:
            declared = 0
            for fname, data in files:
                if not fname.lower().endswith(".zip"):
                    sources.append((fname, data))
                    declared += len(data)
                    continue
                try:
                    zf = zipfile.ZipFile(io.BytesIO(data))
                except (zipfile.BadZipFile, ValueError, OSError):
                    raise BadRequest(f"{_leaf(fname)} is not a readable zip file") from None
                zips.append(zf)
                members = [i for i in zf.infolist() if not i.is_dir()]
                if len(sources) + len(members) > MAX_UPLOAD_FILES:
                    raise BadRequest(f"too many files (over {MAX_UPLOAD_FILES}); at most {MAX_UPLOAD_FILES} "
                                     "per upload")
                declared += sum(i.file_size for i in members)
                sources.extend((i.filename, (zf, i)) for i in members)
            if len(sources) > MAX_UPLOAD_FILES:
                raise BadRequest(f"too many files (over {MAX_UPLOAD_FILES}); at most {MAX_UPLOAD_FILES} per upload")
            if declared > cap:
                raise TooLarge(_too_large(declared, cap))
            plan = []  # (relative destination, source): names are checked before any byte is inflated
            for fname, src in sources:
                parts = [p for p in fname.replace("\\", "/").split("/") if p]
                if not parts:
                    continue
                leaf = parts[-1]
                sub = parts[-2] if len(parts) > 1 and _FOLDER.match(parts[-2]) and ".." not in parts[-2] else ""
                if leaf.startswith(".") or Path(leaf).suffix.lower() not in IMAGE_EXTS + CAPTION_EXTS:
                    continue
                if not _NAME.match(leaf):
                    raise BadRequest(f"file name {leaf!r} must be plain (letters, digits, space, '-', '_', '.')")
                plan.append((Path(sub_base, sub, leaf), src))
            if not plan:
                raise BadRequest(f"no images or captions in the upload (images: {', '.join(IMAGE_EXTS)}; "
                                 f"captions: {', '.join(CAPTION_EXTS)})")
            self._store(base, plan, cap)
        finally:
            for zf in zips:
                zf.close()
        return {"dataset": name, "saved": len(plan)}

    def _store(self, base: Path, plan: list[tuple[Path, Any]], cap: int) -> None:
        """Write ``plan`` into a temp folder beside the datasets, then move it into ``base``."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.root))  # hidden from the listing
        try:
            total = 0
            for rel, src in plan:
                if isinstance(src, bytes):
                    data = src
                else:
                    zf, info = src
                    try:
                        with zf.open(info) as fh:
                            data = fh.read(cap - total + 1)  # never more than the cap, whatever the header says
                    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
                            ValueError, RuntimeError, zlib.error) as exc:
                        raise BadRequest(f"zip member {rel.name!r} cannot be read ({type(exc).__name__})") from None
                total += len(data)
                if total > cap:
                    raise TooLarge(_too_large(total, cap, counted=True))
                dest = temp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            if not base.exists():
                os.replace(temp, base)  # a new dataset appears whole
                return
            for path in sorted(p for p in temp.rglob("*") if p.is_file()):
                dest = base / path.relative_to(temp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def check(self, name: str, resolution: int = 512) -> dict[str, Any]:
        from sdcloud.training.config import TrainConfig
        from sdcloud.training.dataset import scan_dataset

        report = scan_dataset(TrainConfig(dataset=str(self.dataset_path(name)), resolution=resolution))
        out = report.to_dict()
        out["root"] = name
        out["errors"] = [self.client_text(e, name) for e in out["errors"]]
        return out

    def client_text(self, text: str, dataset: str) -> str:
        """A message about ``dataset`` as an API client may see it: the dataset by its name and
        the route that checks it, no folder of the server (those stay in the log)."""
        folder = str(self.root / dataset)
        text = text.replace(f"dataset {folder}:", f"dataset '{dataset}':").replace(folder, f"dataset '{dataset}'")
        text = text.replace("run 'sdcloud train check'", f"see GET /api/train/datasets/{dataset}/check")
        return redact_paths(text)

    # jobs --------------------------------------------------------------------------------
    def config(self, req: TrainRequest) -> Any:
        from sdcloud.training.config import TrainConfig, config_from_mapping
        from sdcloud.training.presets import apply_preset

        cfg = TrainConfig()
        if req.preset:
            cfg = apply_preset(cfg, req.preset)
        for key in ("dataset", "model", "name", "reg_dir", "resume", "restart"):
            if key in req.options:
                raise BadRequest(f"option {key!r} goes in its own field, not in options")
        cfg = config_from_mapping(req.options, cfg)
        return cfg.replace(dataset=str(self.dataset_path(req.dataset)), model=req.model, name=req.name)

    def submit(self, req: TrainRequest) -> Job:
        from sdcloud.training.trainer import preflight

        try:
            cfg = self.config(req)
            preflight(cfg, self.settings)  # bad options, dataset or model: 4xx now, not a failed job later
        except SdcloudError as err:
            text = self.client_text(err.message, req.dataset)
            if text == err.message:
                raise
            log.info("training request refused: %s", err.message)
            err.message, err.args = text, (text,)
            raise
        payload = {k: v for k, v in cfg.to_dict().items() if k != "extra"}
        if not (req.resume or req.restart):
            from sdcloud.training.state import StateDir
            from sdcloud.training.trainer import state_root

            gen = StateDir(state_root(self.settings), cfg.name).latest()
            if gen is not None:
                raise BadRequest(f"'{cfg.name}' has the saved state of an unfinished run (step {gen.step}): "
                                 "set resume to continue it, or restart to start over")
        payload["resume"], payload["restart"] = req.resume, req.restart
        return self.queue.submit(KIND, payload)

    def status(self, job_id: str) -> dict[str, Any]:
        job = self.queue.get(job_id)
        if job.kind != KIND:
            raise NotFound(f"job {job_id} is not a training job")
        live = self.runner.live.get(job_id, {})
        out = job.to_dict()
        out["phase"] = live.get("phase", job.state)
        out["losses"] = live.get("losses") or self._saved_losses(job)
        out["it_s"] = live.get("it_s")
        out["samples"] = [{"step": s["step"], "url": f"/api/train/{job_id}/samples/{i}"}
                          for i, s in enumerate(live.get("samples", []))]
        return out

    def _saved_losses(self, job: Job) -> list[list[float]]:
        """The loss curve a finished job saved (``losses.json``), for a server restarted since."""
        if not job.finished_state:
            return []
        try:
            path = self.queue.output_file(job.id, "losses.json")
            return [list(p) for p in json.loads(path.read_text(encoding="utf-8"))]
        except (NotFound, OSError, ValueError, TypeError):
            return []

    def sample_path(self, job_id: str, index: int) -> Path:
        samples = self.runner.live.get(job_id, {}).get("samples", [])
        if not 0 <= index < len(samples):
            raise NotFound(f"job {job_id} has no sample {index}")
        path = Path(samples[index]["path"]).resolve()
        root = self.settings.outputs_path.resolve()
        if root not in path.parents or not path.is_file():
            raise NotFound(f"sample {index} of job {job_id} is gone")
        return path

    def presets(self) -> dict[str, Any]:
        from sdcloud.training.presets import PRESETS

        return {k: v.to_dict() for k, v in PRESETS.items()}
