"""Checkpoint tools as queued jobs: ``ckpt-merge``, ``ckpt-convert``, ``ckpt-prune`` and
``ckpt-lora-bake`` run ``sdcloud.checkpoints`` on the job worker, one at a time with generation
(they share the machine's RAM and disk bandwidth), with the tool's byte progress as job progress.

The request models (``MergeRequest``, ...) live here beside the jobs they describe. Payloads
name models only as the catalog knows them (``models/...`` relative names); they are resolved
again when the job runs, so a journaled job never carries a path. Outputs go into the
checkpoint folder under a plain file name. Result: ``output`` (its catalog name), ``sha256``,
``short_hash`` and a few figures from the tool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from sdcloud.catalog import Catalog
from sdcloud.errors import BadRequest, Cancelled
from sdcloud.jobs.base import JobContext
from sdcloud.jobs.control import ProgressEvent
from sdcloud.jobs.gpu import BACKGROUND, GpuOwner
from sdcloud.settings import Settings

KINDS = ("ckpt-merge", "ckpt-convert", "ckpt-prune", "ckpt-lora-bake")
Dtype = Literal["fp16", "bf16", "fp32", "keep"]


# the requests of the four kinds (the API and the UI validate with them before queueing) ------


class MergeRequest(BaseModel):
    a: str
    b: str
    c: str | None = Field(None, description="the common base, for add_difference, train_difference, ties")
    output: str = Field(description="file name written into models/Stable-diffusion")
    method: Literal["weighted_sum", "add_difference", "train_difference", "ties", "dare"] = "weighted_sum"
    alpha: float = Field(0.5, ge=-1.0, le=2.0)
    block_weights: str | None = Field(None, description="26 (SD1/SD2) or 20 (SDXL) values, or block names")
    density: float = Field(0.2, gt=0.0, le=1.0)
    drop_rate: float = Field(0.5, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    dtype: Dtype = "fp16"
    vae: Literal["a", "merge", "none"] = "a"
    bake_vae: str | None = Field(None, description="a VAE name from /sdapi/v1/sd-vae to put in the result")
    keep_a_text_encoder: bool = False


class ConvertRequest(BaseModel):
    model: str
    output: str
    dtype: Dtype = "keep"


class PruneRequest(BaseModel):
    model: str
    output: str
    ema: Literal["drop", "use", "keep"] = "drop"
    dtype: Dtype = "fp16"
    keep_extra: bool = False


class LoraRatio(BaseModel):
    name: str
    ratio: float = Field(1.0, ge=-10.0, le=10.0)


class LoraBakeRequest(BaseModel):
    model: str
    loras: list[LoraRatio] = Field(min_length=1, max_length=32)
    output: str
    dtype: Dtype = "keep"


def output_name(name: str) -> str:
    """A plain ``.safetensors`` file name for the checkpoint folder (never a path)."""
    name = (name or "").strip()
    if not name.lower().endswith(".safetensors"):
        name += ".safetensors"
    stem = name[: -len(".safetensors")]
    if (not stem or "/" in name or "\\" in name or "\0" in name or name.startswith(".")
            or len(name) > 200):
        raise BadRequest(f"output '{name}' must be a plain file name such as 'my-merge.safetensors' "
                         "(it is written into models/Stable-diffusion)")
    return name


class CheckpointRunner:
    """Job handler for the ``KINDS``. ``on_output`` runs after a new checkpoint is in place (to
    rescan the model list). The tools hold the GPU owner as ``BACKGROUND`` (a merge computes on
    CUDA when there is one) and let generation in between tensors."""

    def __init__(self, settings: Settings, catalog: Catalog, hash_cache: Any = None,
                 on_output: Callable[[], None] | None = None, gpu: GpuOwner | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.hash_cache = hash_cache
        self.on_output = on_output
        self.gpu = gpu or GpuOwner()

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        with self.gpu.hold(BACKGROUND):
            return self._run(ctx)

    def _run(self, ctx: JobContext) -> dict[str, Any]:
        p = ctx.payload
        dest = self.settings.checkpoints_path / output_name(p["output"])

        def progress(done: int, total: int) -> None:
            if ctx.cancel.interrupted:
                raise Cancelled("checkpoint job cancelled; no output was written")
            ctx.report(ProgressEvent(done, max(total, 1), 0, 1))
            self.gpu.yield_point()

        kind = ctx.job.kind
        if kind == "ckpt-merge":
            result, extra = self._merge(p, dest, progress)
        elif kind == "ckpt-convert":
            from sdcloud.checkpoints.prune import ConvertOptions, convert_checkpoint

            result = convert_checkpoint(ConvertOptions(self._ckpt(p["model"]), dest, _dtype(p.get("dtype"))),
                                        progress)
            extra = {"tensors": result.tensors, "bytes_in": result.bytes_in, "bytes_out": result.bytes_out}
        elif kind == "ckpt-prune":
            from sdcloud.checkpoints.prune import PruneOptions, prune_checkpoint

            opts = PruneOptions(self._ckpt(p["model"]), dest, ema=p.get("ema", "drop"),
                                dtype=_dtype(p.get("dtype", "fp16")), keep_extra=bool(p.get("keep_extra")))
            result = prune_checkpoint(opts, progress)
            extra = {"tensors": result.tensors, "dropped": len(result.dropped), "bytes_in": result.bytes_in,
                     "bytes_out": result.bytes_out}
        elif kind == "ckpt-lora-bake":
            from sdcloud.checkpoints.lora_bake import LoraBakeOptions, bake_loras

            loras = tuple((self.catalog.resolve("lora", item["name"]).path, float(item["ratio"]))
                          for item in p["loras"])
            result = bake_loras(LoraBakeOptions(self._ckpt(p["model"]), loras, dest, _dtype(p.get("dtype"))),
                                progress)
            extra = {"applied": result.applied, "unmatched": {k: len(v) for k, v in result.unmatched.items()}}
        else:
            raise BadRequest(f"unknown checkpoint job '{kind}'")
        self.catalog.refresh()
        if self.on_output is not None:
            self.on_output()
        return {"output": dest.name, "sha256": result.hashes.sha256, "short_hash": result.hashes.short, **extra}

    def _ckpt(self, name: str) -> Path:
        return self.catalog.resolve("checkpoint", name).path

    def _merge(self, p: dict[str, Any], dest: Path, progress: Callable[[int, int], None]) -> tuple[Any, dict]:
        from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints

        opts = MergeOptions(
            a=self._ckpt(p["a"]),
            b=self._ckpt(p["b"]),
            c=self._ckpt(p["c"]) if p.get("c") else None,
            output=dest,
            method=p.get("method", "weighted_sum"),
            alpha=float(p.get("alpha", 0.5)),
            block_weights=p.get("block_weights") or None,
            density=float(p.get("density", 0.2)),
            drop_rate=float(p.get("drop_rate", 0.5)),
            seed=int(p.get("seed", 0)),
            dtype=_dtype(p.get("dtype", "fp16")),
            vae=p.get("vae", "a"),
            bake_vae=self.catalog.resolve("vae", p["bake_vae"]).path if p.get("bake_vae") else None,
            keep_a_text_encoder=bool(p.get("keep_a_text_encoder")),
            custom_name=dest.stem,
        )
        result = merge_checkpoints(opts, progress, hash_cache=self.hash_cache)
        return result, {"arch": result.arch, "tensors": result.tensors, "merged": result.merged,
                        "seconds": round(result.seconds, 2)}


def _dtype(value: str | None) -> str | None:
    """``keep`` (or nothing) keeps the input's dtypes."""
    return None if value in (None, "", "keep") else value
