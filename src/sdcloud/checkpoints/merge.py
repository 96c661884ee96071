"""Streaming checkpoint merge: every input read one tensor at a time, computed in float32,
written straight into the output (reference/checkpoints.md §3, §6, §13).

Everything that can be refused is refused before the output file is opened: unknown method,
missing third model, mixed architectures, shape mismatches, a VAE that does not fit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdcloud.checkpoints import merge_methods as mm
from sdcloud.checkpoints.blocks import block_layout, block_of, parse_block_weights
from sdcloud.checkpoints.detect import ArchInfo, detect_architecture
from sdcloud.checkpoints.hashing import FileHashes, HashCache, compute_hashes
from sdcloud.checkpoints.stream import (
    Entry,
    Progress,
    StreamWriter,
    TensorSource,
    check_output,
    open_source,
    output_dtype,
    prefetch,
    single_intraop_thread,
)
from sdcloud.errors import BadRequest, Unsupported

if TYPE_CHECKING:
    import torch

VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = ("cond_stage_model.", "conditioner.")
EMA_PREFIX = "model_ema."
VAE_MODES = ("a", "merge", "none")
ELEMENTWISE = frozenset({"weighted_sum", "add_difference", "train_difference"})
CHUNK = 1 << 18  # elements per slice in the CPU path (1 MiB of float32)
# input metadata that would be false for the merged file
_NOT_CARRIED = frozenset({"sd_merge_recipe", "sd_merge_models", "sshs_model_hash", "sshs_legacy_hash",
                          "modelspec.hash_sha256", "modelspec.title"})


def is_position_ids(key: str) -> bool:
    return key.endswith("embeddings.position_ids")


@dataclass(frozen=True)
class MergeOptions:
    """What to merge and how. ``c`` is required by add/train difference and TIES."""

    a: Path
    b: Path
    output: Path
    c: Path | None = None
    method: str = "weighted_sum"
    alpha: float = 0.5
    block_weights: str | None = None  # see blocks.parse_block_weights
    density: float = 0.2  # TIES: fraction of each task vector kept
    drop_rate: float = 0.5  # DARE: probability of dropping an entry
    seed: int = 0  # DARE
    dtype: str | None = "fp16"  # fp16 | bf16 | fp32 | None (keep A's)
    vae: str = "a"  # a: copy A's VAE | merge: merge it like the rest | none: leave it out
    bake_vae: Path | None = None  # copy this VAE into the result (overrides ``vae``)
    keep_a_text_encoder: bool = False
    device: str | None = None  # None: cuda when available, else cpu
    overwrite: bool = False
    custom_name: str = ""
    direct_io: bool = True  # write the output with O_DIRECT where the filesystem takes it (sink.py)


@dataclass
class MergeResult:
    path: Path
    hashes: FileHashes
    arch: str
    tensors: int
    merged: int
    copied_from_a: int
    missing_in_others: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Step:
    entry: Entry
    action: str  # merge | copy | position_ids | vae
    alpha: float = 0.0
    channels: int | None = None  # inpaint A with a normal B: merge only the first channels


def merge_checkpoints(opts: MergeOptions, progress: Progress | None = None,
                      hash_cache: HashCache | None = None) -> MergeResult:
    """Merge per ``opts`` and return where the result is and its hashes."""
    started = time.monotonic()
    _check_options(opts)
    sources: list[TensorSource] = []
    try:
        for p in (opts.a, opts.b, opts.c, opts.bake_vae):
            sources.append(open_source(p) if p is not None else None)  # type: ignore[arg-type]
        a, b, c, vae = sources
        arch = _check_architectures(a, b, c)
        steps, missing = _plan(opts, a, b, c, vae, arch)
        inputs = [s for s in (a, b, c) if s is not None]
        to_hash = [s.path for s in inputs
                   if hash_cache is None or hash_cache.get(s.path, compute=False) is None]
        out_bytes = sum(s.entry.nbytes for s in steps)
        overall = _Overall(progress, sum(p.stat().st_size for p in to_hash) + out_bytes)
        hashes = _input_hashes(inputs, hash_cache, overall.add)
        metadata = _metadata(opts, arch, inputs, hashes, vae)
        written_before = overall.done
        out_hashes = _run(opts, steps, a, b, c, vae, metadata,
                          (lambda done, total: overall.set(written_before + done)) if progress else None)
    finally:
        for s in sources:
            if s is not None:
                s.close()
    if hash_cache is not None:  # the engine then loads the result without hashing it again
        hash_cache.put(opts.output, out_hashes)
    merged = sum(1 for s in steps if s.action == "merge")
    return MergeResult(
        path=opts.output, hashes=out_hashes, arch=arch.label, tensors=len(steps), merged=merged,
        copied_from_a=len(steps) - merged, missing_in_others=missing,
        seconds=time.monotonic() - started,
    )


def _check_options(opts: MergeOptions) -> None:
    if opts.method not in mm.METHODS:
        raise BadRequest(f"unknown merge method '{opts.method}'; use one of {', '.join(mm.METHODS)}")
    needs_c, label = mm.METHODS[opts.method]
    if needs_c and opts.c is None:
        raise BadRequest(f"{label} needs a third model C (the common base)")
    if opts.method == "weighted_sum" and opts.c is not None:
        raise BadRequest("weighted sum merges two models; give C only with add_difference, "
                         "train_difference, ties or dare")
    if opts.vae not in VAE_MODES:
        raise BadRequest(f"vae must be one of {', '.join(VAE_MODES)}")
    if not 0.0 < opts.density <= 1.0:
        raise BadRequest("density must be in (0, 1]")
    if not 0.0 <= opts.drop_rate < 1.0:
        raise BadRequest("drop_rate must be in [0, 1)")
    output_dtype(opts.dtype)
    check_output(opts.output, (opts.a, opts.b, opts.c, opts.bake_vae), opts.overwrite)


def _arch(src: TensorSource) -> ArchInfo:
    try:
        return detect_architecture({k: e.shape for k, e in src.entries.items()}, src.metadata)
    except Unsupported as err:
        raise Unsupported(f"{src.path.name}: {err}") from None


def _check_architectures(a: TensorSource, b: TensorSource, c: TensorSource | None) -> ArchInfo:
    arch_a = _arch(a)
    for name, src in (("B", b), ("C", c)):
        if src is None:
            continue
        other = _arch(src)
        if other.family != arch_a.family:
            raise BadRequest(f"cannot merge {arch_a.label} (A: {a.path.name}) with {other.label} "
                             f"({name}: {src.path.name}): the architectures differ")
        if other.variant != arch_a.variant and arch_a.variant == "base":
            raise BadRequest(f"{name} is an {other.label} model but A is not: when merging an "
                             "inpainting/pix2pix model with a normal one, A must be the inpainting model")
    return arch_a


def _plan(opts: MergeOptions, a: TensorSource, b: TensorSource, c: TensorSource | None,
          vae: TensorSource | None, arch: ArchInfo) -> tuple[list[_Step], list[str]]:
    out_dtype = output_dtype(opts.dtype)
    layout = block_layout(a.entries)
    weights = (parse_block_weights(opts.block_weights, layout, opts.alpha) if opts.block_weights
               else dict.fromkeys(layout, opts.alpha))
    vae_keys = _vae_keys(vae) if vae is not None else {}
    others = [s for s in (b, c) if s is not None]
    steps: list[_Step] = []
    missing: list[str] = []
    mismatched: list[str] = []
    for key, e in a.entries.items():
        if key.startswith(EMA_PREFIX):
            continue  # stale after a merge (reference §8): never carried over
        is_vae = key.startswith(VAE_PREFIX)
        if is_vae and vae is None and opts.vae == "none":
            continue
        dtype = out_dtype if (out_dtype and e.is_float) else e.dtype
        if is_position_ids(key):
            steps.append(_Step(Entry(key, "I64", e.shape), "position_ids"))
            continue
        if is_vae and vae is not None and key[len(VAE_PREFIX):] in vae_keys:
            src = vae.entries[vae_keys[key[len(VAE_PREFIX):]]]
            if src.shape != e.shape:
                raise BadRequest(f"VAE {vae.path.name} does not fit this model: '{src.name}' is "
                                 f"{src.shape}, the model has {e.shape}")
            steps.append(_Step(Entry(key, dtype, e.shape), "vae"))
            continue
        copy = (
            not e.is_float
            or "model" not in key
            or (is_vae and opts.vae != "merge")
            or (opts.keep_a_text_encoder and key.startswith(TEXT_PREFIXES))
        )
        if not copy and any(key not in s.entries for s in others):
            missing.append(key)
            copy = True
        if copy:
            steps.append(_Step(Entry(key, dtype, e.shape), "copy"))
            continue
        channels = None
        for s in others:
            shape = s.entries[key].shape
            if shape == e.shape:
                continue
            if (arch.variant != "base" and len(shape) == len(e.shape) and len(shape) > 1
                    and shape[0] == e.shape[0] and shape[2:] == e.shape[2:] and shape[1] < e.shape[1]):
                channels = shape[1]
            else:
                mismatched.append(f"'{key}' A {e.shape} vs {s.path.name} {shape}")
        if c is not None and c.entries[key].shape != b.entries[key].shape:
            mismatched.append(f"'{key}' B {b.entries[key].shape} vs C {c.entries[key].shape}")
        steps.append(_Step(Entry(key, dtype, e.shape), "merge", weights[block_of(key, layout)], channels))
    if mismatched:
        more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        raise BadRequest("the models do not have the same shapes, refusing to merge: "
                         + "; ".join(mismatched[:5]) + more)
    return steps, missing


def _vae_keys(vae: TensorSource) -> dict[str, str]:
    """VAE file key (with or without ``first_stage_model.``) by its name inside the model."""
    out = {}
    for k in vae.entries:
        inner = k[len(VAE_PREFIX):] if k.startswith(VAE_PREFIX) else k
        if not inner.startswith(("loss", "model_ema")):
            out[inner] = k
    return out


class _Overall:
    """One ``progress(done, total)`` over hashing the inputs and writing the output (bytes)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if self.progress:
            self.progress(done, self.total)


def _input_hashes(sources: list[TensorSource], cache: HashCache | None,
                  tick: Callable[[int], None]) -> list[FileHashes]:
    """sha256 of each input for the recipe, cached by the caller's ``HashCache``; files not
    in the cache are hashed in parallel (hashlib releases the GIL)."""
    def one(src: TensorSource) -> FileHashes:
        if cache is None:
            return compute_hashes(src.path, tick)
        return cache.get(src.path, progress=tick)  # type: ignore[return-value]

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        return list(pool.map(one, sources))


def _metadata(opts: MergeOptions, arch: ArchInfo, sources: list[TensorSource], hashes: list[FileHashes],
              vae: TensorSource | None) -> dict[str, str]:
    """A1111-style ``sd_merge_recipe`` and ``sd_merge_models`` (plus our method's parameters)."""
    recipe = {
        "type": "sdcloud",
        "primary_model_hash": hashes[0].sha256,
        "secondary_model_hash": hashes[1].sha256,
        "tertiary_model_hash": hashes[2].sha256 if len(hashes) > 2 else None,
        "interp_method": mm.METHODS[opts.method][1],
        "multiplier": opts.alpha,
        "save_as_half": opts.dtype == "fp16",
        "custom_name": opts.custom_name or None,
        "config_source": 0,
        "bake_in_vae": vae.path.name if vae is not None else "None",
        "discard_weights": "model_ema" + ("|first_stage_model" if opts.vae == "none" and vae is None else ""),
        "is_inpainting": arch.variant == "inpaint",
        "is_instruct_pix2pix": arch.variant == "pix2pix",
        "block_weights": opts.block_weights,
        "keep_a_text_encoder": opts.keep_a_text_encoder,
        "vae_source": "bake" if vae is not None else opts.vae,
        "output_dtype": opts.dtype,
    }
    if opts.method == "ties":
        recipe.update(density=opts.density, sign_election="sum")
    if opts.method == "dare":
        recipe.update(drop_rate=opts.drop_rate, seed=opts.seed)
    models: dict[str, object] = {}
    for src, h in zip(sources, hashes, strict=True):
        own = src.metadata.get("sd_merge_recipe")
        try:
            models.update(json.loads(src.metadata.get("sd_merge_models", "{}")))
        except ValueError:
            pass
        models[h.sha256] = {"name": src.path.name, "legacy_hash": h.autov1,
                            "sd_merge_recipe": _json_or_none(own)}
    carried: dict[str, str] = {}
    for src in reversed(sources):  # like A1111's "copy metadata": A's values win
        carried.update({k: v for k, v in src.metadata.items() if k not in _NOT_CARRIED})
    return {**carried, "format": "pt", "sd_merge_recipe": json.dumps(recipe),
            "sd_merge_models": json.dumps(models)}


def _json_or_none(text: str | None) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _run(opts: MergeOptions, steps: list[_Step], a: TensorSource, b: TensorSource, c: TensorSource | None,
         vae: TensorSource | None, metadata: dict[str, str], progress: Progress | None) -> FileHashes:
    import torch

    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae_keys = _vae_keys(vae) if vae is not None else {}

    def reader(step: _Step) -> Callable[[], tuple[_Step, list[torch.Tensor]]]:
        key = step.entry.name
        if step.action == "merge":
            return lambda: (step, [s.get(key) for s in (a, b, c) if s is not None])
        if step.action == "vae":
            return lambda: (step, [vae.get(vae_keys[key[len(VAE_PREFIX):]])])  # type: ignore[union-attr]
        if step.action == "copy":
            return lambda: (step, [a.get(key)])
        return lambda: (step, [])

    with torch.inference_mode(), single_intraop_thread(device), \
            StreamWriter(opts.output, [s.entry for s in steps], metadata, progress,
                         direct=opts.direct_io) as w:
        for step, tensors in prefetch(reader(s) for s in steps):
            if step.action == "merge":
                result = _merge_one(opts, step, tensors, device, w.buffer(step.entry))
            elif step.action == "position_ids":
                n = step.entry.shape[-1] if step.entry.shape else 77
                result = torch.arange(n, dtype=torch.int64).reshape(step.entry.shape)
            else:  # copied (the writer casts it to the output dtype)
                result = tensors[0]
            w.write(step.entry.name, result)
    assert w.hashes is not None
    return w.hashes


def _merge_one(opts: MergeOptions, step: _Step, tensors: list[torch.Tensor], device: torch.device,
               out: torch.Tensor) -> torch.Tensor:
    """Merge one key into ``out`` (the output dtype, on the CPU) and return it."""
    import torch

    if device.type == "cpu" and step.channels is None:
        if opts.method == "weighted_sum" and all(t.dtype == out.dtype for t in tensors):
            # torch's CPU lerp on fp16/bf16 computes in float32 and rounds once: the same bits
            # as the float32 formula (tested), without a float32 copy of either input.
            return torch.lerp(tensors[0], tensors[1], step.alpha, out=out)
        if opts.method in ELEMENTWISE:
            return _merge_chunked(opts, step, tensors, out)
    full = [t.to(device=device, dtype=torch.float32, copy=True) for t in tensors]
    if step.channels is not None:
        part = [full[0][:, : step.channels].clone(), *full[1:]]
        full[0][:, : step.channels] = _apply(opts, step, part)
        return out.copy_(full[0])
    return out.copy_(_apply(opts, step, full))


def _merge_chunked(opts: MergeOptions, step: _Step, tensors: list[torch.Tensor],
                   out: torch.Tensor) -> torch.Tensor:
    """Elementwise methods on CPU, a cache-sized slice at a time, through float32 buffers
    reused for every slice: no model-sized float32 temporaries, no fresh memory per slice."""
    import torch

    flat_out = out.view(-1)
    flat_in = [t.reshape(-1) for t in tensors]
    size = min(CHUNK, flat_out.numel())
    bufs = [torch.empty(size, dtype=torch.float32) for _ in flat_in]
    for start in range(0, flat_out.numel(), CHUNK):
        n = min(CHUNK, flat_out.numel() - start)
        part = [buf[:n].copy_(t[start:start + n]) for buf, t in zip(bufs, flat_in, strict=True)]
        flat_out[start:start + n].copy_(_apply(opts, step, part))
    return out


def _apply(opts: MergeOptions, step: _Step, t: list[torch.Tensor]) -> torch.Tensor:
    alpha, key = step.alpha, step.entry.name
    if opts.method == "weighted_sum":
        return mm.weighted_sum(t[0], t[1], alpha)
    if opts.method == "add_difference":
        return mm.add_difference(t[0], t[1], t[2], alpha)
    if opts.method == "train_difference":
        return mm.train_difference(t[0], t[1], t[2], alpha)
    if opts.method == "ties":
        return mm.ties(t[0], t[1], t[2], alpha, opts.density)
    return mm.dare(t[0], t[1], t[2] if len(t) > 2 else None, alpha, opts.drop_rate, opts.seed, key)
