"""Prune and convert: stream a checkpoint into a smaller or safer ``.safetensors`` file.

Prune (reference/checkpoints.md §8) keeps the model components (UNet, text encoders, VAE),
drops EMA copies or makes them the model, drops training leftovers, casts to fp16/bf16 and
rebuilds CLIP ``position_ids`` as int64 ``arange(77)``. Convert keeps every tensor as it is
and only changes the container (a pickle read with the safe loader becomes safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdcloud.checkpoints.detect import detect_architecture
from sdcloud.checkpoints.hashing import FileHashes
from sdcloud.checkpoints.layouts import ema_name
from sdcloud.checkpoints.merge import EMA_PREFIX, is_position_ids
from sdcloud.checkpoints.stream import (
    CopyStep,
    Entry,
    Progress,
    TensorSource,
    check_output,
    open_source,
    output_dtype,
    rewrite,
)
from sdcloud.errors import BadRequest, Unsupported

MODEL_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.")
UNET_PREFIX = "model.diffusion_model."
EMA_MODES = ("drop", "use", "keep")


@dataclass(frozen=True)
class PruneOptions:
    source: Path
    output: Path
    ema: str = "drop"  # drop: discard EMA | use: EMA weights become the UNet | keep: leave them in
    dtype: str | None = "fp16"  # fp16 | bf16 | fp32 | None (keep)
    keep_extra: bool = False  # keep tensors outside UNet/text encoder/VAE (schedule buffers...)
    overwrite: bool = False


@dataclass(frozen=True)
class ConvertOptions:
    source: Path
    output: Path
    dtype: str | None = None
    overwrite: bool = False


@dataclass
class RewriteResult:
    path: Path
    hashes: FileHashes
    tensors: int
    dropped: list[str]
    bytes_in: int
    bytes_out: int


def prune_checkpoint(opts: PruneOptions, progress: Progress | None = None) -> RewriteResult:
    if opts.ema not in EMA_MODES:
        raise BadRequest(f"ema must be one of {', '.join(EMA_MODES)}")
    out_dtype = output_dtype(opts.dtype)
    check_output(opts.output, [opts.source], opts.overwrite)
    src = open_source(opts.source)
    try:
        try:
            detect_architecture({k: e.shape for k, e in src.entries.items()}, src.metadata)
        except Unsupported as err:
            raise Unsupported(f"{src.path.name}: {err}; 'sdcloud ckpt convert' changes only the "
                              "format of any tensor file") from None
        has_ema = any(k.startswith(EMA_PREFIX) for k in src.entries)
        if opts.ema == "use" and not has_ema:
            raise BadRequest(f"{src.path.name} has no EMA weights (model_ema.*) to use")
        steps: list[CopyStep] = []
        dropped: list[str] = []
        for key, e in src.entries.items():
            is_ema = key.startswith(EMA_PREFIX)
            if (is_ema and opts.ema != "keep") or (
                    not is_ema and not opts.keep_extra and not key.startswith(MODEL_PREFIXES)):
                dropped.append(key)
                continue
            dtype = out_dtype if (out_dtype and e.is_float) else e.dtype
            source_key: str | None = key
            if is_position_ids(key):
                dtype, source_key = "I64", None
            elif opts.ema == "use" and key.startswith(UNET_PREFIX) and ema_name(key) in src.entries:
                source_key = ema_name(key)
                if src.entries[source_key].shape != e.shape:
                    raise BadRequest(f"EMA tensor '{source_key}' does not match '{key}' in shape")
            steps.append(CopyStep(Entry(key, dtype, e.shape), source_key))
        return _finish(src, opts.output, steps, dropped, progress)
    finally:
        src.close()


def convert_checkpoint(opts: ConvertOptions, progress: Progress | None = None) -> RewriteResult:
    """Re-container every tensor (safe pickle load in, safetensors out), optionally cast."""
    out_dtype = output_dtype(opts.dtype)
    check_output(opts.output, [opts.source], opts.overwrite)
    src = open_source(opts.source)
    try:
        steps = [CopyStep(Entry(k, out_dtype if (out_dtype and e.is_float) else e.dtype, e.shape), k)
                 for k, e in src.entries.items()]
        return _finish(src, opts.output, steps, [], progress)
    finally:
        src.close()


def _finish(src: TensorSource, dest: Path, steps: list[CopyStep], dropped: list[str],
            progress: Progress | None) -> RewriteResult:
    metadata = {**src.metadata, "format": "pt"}
    hashes = rewrite(src, dest, steps, metadata, progress)
    return RewriteResult(path=dest, hashes=hashes, tensors=len(steps), dropped=dropped,
                         bytes_in=src.path.stat().st_size, bytes_out=dest.stat().st_size)
