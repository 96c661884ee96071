"""Checkpoint tools for the HTTP API and the UI: ``inspect`` and ``hash`` answer at once; merge,
convert, prune and LoRA bake are validated here (names resolved through the catalog, output
name, methods, architectures) and queued as jobs (``sdcloud.jobs.ckpt``).

Requests name models as ``/sdapi/v1/sd-models`` (and the LoRA/VAE lists) show them; no path
from a request ever reaches the file system.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, Field

from sdcloud.catalog import Catalog, ModelFile
from sdcloud.errors import BadRequest, SdcloudError, Unsupported
from sdcloud.jobs import Job, JobQueue
from sdcloud.jobs.ckpt import ConvertRequest, LoraBakeRequest, MergeRequest, PruneRequest, output_name
from sdcloud.settings import Settings

SAFE_EXT = ".safetensors"


class InspectRequest(BaseModel):
    model: str = Field(description="checkpoint name as /sdapi/v1/sd-models lists it")
    hash: bool = Field(False, description="also compute the hashes (reads the whole file)")


class HashRequest(BaseModel):
    name: str = Field(description="model name in its folder")
    kind: Literal["checkpoint", "lora", "vae", "embedding"] = "checkpoint"


class CheckpointTools:
    def __init__(self, settings: Settings, catalog: Catalog, queue: JobQueue, hash_cache: Any) -> None:
        self.settings = settings
        self.catalog = catalog
        self.queue = queue
        self.hashes = hash_cache

    # answered at once ----------------------------------------------------------------
    def inspect(self, req: InspectRequest) -> dict[str, Any]:
        from sdcloud.checkpoints.inspection import inspect_checkpoint

        m = self._file("checkpoint", req.model)
        report = inspect_checkpoint(m.path, with_hashes=req.hash)
        data = asdict(report)
        data["path"] = m.name  # the catalog name, not the server's path
        if report.hashes:
            data["hashes"].update(short=report.hashes.short, lora_short=report.hashes.lora_short)
        return data

    def hash(self, req: HashRequest) -> dict[str, Any]:
        m = self._file(req.kind, req.name)
        h = self.hashes.get(m.path)
        return {"name": m.name, "kind": req.kind, "sha256": h.sha256, "short": h.short, "autov1": h.autov1,
                "addnet": h.addnet, "lora_short": h.lora_short}

    # queued ----------------------------------------------------------------------------
    def submit(self, req: MergeRequest | ConvertRequest | PruneRequest | LoraBakeRequest) -> Job:
        out = output_name(req.output)
        if (self.settings.checkpoints_path / out).exists():
            raise BadRequest(f"models/Stable-diffusion/{out} already exists; choose another output name")
        if isinstance(req, MergeRequest):
            kind = "ckpt-merge"
            models = {"A": self._file("checkpoint", req.a), "B": self._file("checkpoint", req.b)}
            if req.c:
                models["C"] = self._file("checkpoint", req.c)
            if req.method in ("add_difference", "train_difference", "ties") and not req.c:
                raise BadRequest(f"{req.method} needs a third model c (the common base)")
            if req.method == "weighted_sum" and req.c:
                raise BadRequest("weighted_sum merges two models; give c only with add_difference, "
                                 "train_difference, ties or dare")
            if req.bake_vae:
                self._file("vae", req.bake_vae)
            _same_architecture(models)
            payload = {**req.model_dump(), "a": models["A"].name, "b": models["B"].name,
                       "c": models["C"].name if "C" in models else None}
        elif isinstance(req, LoraBakeRequest):
            kind = "ckpt-lora-bake"
            payload = {**req.model_dump(), "model": self._file("checkpoint", req.model).name,
                       "loras": [{"name": self._file("lora", x.name).name, "ratio": x.ratio} for x in req.loras]}
        else:
            kind = "ckpt-convert" if isinstance(req, ConvertRequest) else "ckpt-prune"
            payload = {**req.model_dump(), "model": self._file("checkpoint", req.model).name}
        payload["output"] = out
        return self.queue.submit(kind, payload)

    def _file(self, kind: str, name: str) -> ModelFile:
        m = self.catalog.resolve(kind, name)
        if not m.path.is_file():
            raise Unsupported(f"{kind} '{name}' is a diffusers folder; the checkpoint tools work on "
                              "single files (.safetensors, .ckpt)")
        return m


def _same_architecture(models: dict[str, ModelFile]) -> None:
    """Refuse mixed families before queueing (safetensors headers only; a pickle input is
    checked by the job itself)."""
    from sdcloud.checkpoints.detect import detect_architecture
    from sdcloud.checkpoints.safetensors_header import read_header

    seen: list[tuple[str, Any]] = []
    for label, m in models.items():
        if m.path.suffix.lower() != SAFE_EXT:
            continue
        try:
            header = read_header(m.path)
            arch = detect_architecture({k: t.shape for k, t in header.tensors.items()}, header.metadata)
        except SdcloudError as err:
            raise BadRequest(f"{label} ({m.name}): {err}") from None
        for other_label, other in seen:
            if other.family != arch.family:
                raise BadRequest(f"cannot merge {other.label} ({other_label}) with {arch.label} ({label}: "
                                 f"{m.name}): the architectures differ")
        seen.append((label, arch))
