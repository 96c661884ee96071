"""What is in a checkpoint, from its header alone (plus hashes on request)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdcloud.checkpoints import layouts
from sdcloud.checkpoints.detect import ArchInfo, detect_architecture
from sdcloud.checkpoints.hashing import FileHashes, compute_hashes
from sdcloud.checkpoints.stream import open_source
from sdcloud.errors import Unsupported

COMPONENTS = {
    "unet": ("model.diffusion_model.",),
    "text_encoder": ("cond_stage_model.", "conditioner."),
    "vae": ("first_stage_model.",),
    "ema": ("model_ema.",),
}
_V_PARAM = re.compile(r"parameterization:\s*['\"]?v['\"]?")


@dataclass
class InspectReport:
    path: Path
    size: int
    format: str  # safetensors | pickle
    architecture: str  # label, or "unknown"
    family: str | None
    variant: str | None
    prediction: str  # epsilon | v | unknown
    evidence: list[str]
    tensors: int
    parameters: int
    dtypes: dict[str, int]  # parameters per dtype
    components: dict[str, int]  # parameters per component
    has_ema: bool
    has_vae: bool
    has_text_encoder: bool
    missing: dict[str, int] = field(default_factory=dict)  # vs the full-size reference layout
    metadata: dict[str, str] = field(default_factory=dict)
    hashes: FileHashes | None = None


def inspect_checkpoint(path: str | Path, with_hashes: bool = False,
                       progress: Callable[[int, int], None] | None = None) -> InspectReport:
    """Describe ``path``; an unrecognised model is reported as "unknown" with the reason."""
    path = Path(path)
    src = open_source(path)
    try:
        shapes = {k: e.shape for k, e in src.entries.items()}
        dtypes: Counter[str] = Counter()
        components: Counter[str] = Counter()
        for k, e in src.entries.items():
            n = math.prod(e.shape)
            dtypes[e.dtype] += n
            comp = next((c for c, pre in COMPONENTS.items() if k.startswith(pre)), "other")
            components[comp] += n
        arch: ArchInfo | None
        try:
            arch = detect_architecture(shapes, src.metadata)
            evidence = list(arch.evidence)
        except Unsupported as err:
            arch, evidence = None, [str(err)]
        metadata = dict(src.metadata)
        fmt = "safetensors" if path.suffix.lower() == ".safetensors" else "pickle"
    finally:
        src.close()
    size = path.stat().st_size
    hashes = None
    if with_hashes:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, size)

        hashes = compute_hashes(path, tick)
    return InspectReport(
        path=path, size=size, format=fmt,
        architecture=arch.label if arch else "unknown",
        family=arch.family if arch else None, variant=arch.variant if arch else None,
        prediction=_prediction(path, shapes, metadata, arch),
        evidence=evidence, tensors=len(shapes), parameters=sum(dtypes.values()), dtypes=dict(dtypes),
        components=dict(components), has_ema=components["ema"] > 0, has_vae=components["vae"] > 0,
        has_text_encoder=components["text_encoder"] > 0, missing=_missing(shapes, arch),
        metadata=metadata, hashes=hashes,
    )


def _prediction(path: Path, shapes: dict, metadata: dict[str, str], arch: ArchInfo | None) -> str:
    """v-prediction cannot be read off SD 2.x weights: trust a v_pred key, the modelspec
    metadata or an A1111-style ``.yaml`` next to the file, else say so."""
    if "v_pred" in shapes or metadata.get("modelspec.prediction_type", "").startswith("v"):
        return "v"
    yaml = path.with_suffix(".yaml")
    if yaml.is_file():
        return "v" if _V_PARAM.search(yaml.read_text(errors="replace")) else "epsilon"
    if arch is None:
        return "unknown"
    return "unknown" if arch.family == "sd2" else "epsilon"


def _missing(shapes: dict, arch: ArchInfo | None) -> dict[str, int]:
    """Keys of the real SD 1.x / SDXL base layout absent from a full-size file, per component
    (a file with a whole component missing, e.g. no VAE, is normal and not listed)."""
    if arch is None or arch.variant != "base":
        return {}
    ref = {"sd1": layouts.SD15, "sdxl": layouts.SDXL}.get(arch.family)
    if ref is None or shapes.get("model.diffusion_model.input_blocks.0.0.weight", (0,))[0] != ref.ch:
        return {}
    out: dict[str, int] = {}
    expected = layouts.checkpoint(ref)
    for comp, prefixes in COMPONENTS.items():
        keys = [k for k in expected if k.startswith(prefixes)]
        present = [k for k in keys if k in shapes]
        if present and len(present) < len(keys):
            out[comp] = len(keys) - len(present)
    return out
