"""Per-block merge weights (MBW) in the supermerger/A1111-extension layout (reference §4).

SD 1.x/2.x UNets have 12 input blocks, so 26 weights: BASE, IN00–IN11, M00, OUT00–OUT11.
SDXL base has 9, so 20: BASE, IN00–IN08, M00, OUT00–OUT08. The layout is taken from the
primary model's own keys. BASE covers everything outside the UNet (text encoders, and the
VAE when it is merged). ``time_embed`` and ``label_emb`` count as IN00 and the final
``out.*`` layers as the last OUT block, as supermerger and meh do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sdcloud.errors import BadRequest

UNET = "model.diffusion_model."
_INPUT = re.compile(r"input_blocks\.(\d+)\.")
_OUTPUT = re.compile(r"output_blocks\.(\d+)\.")
_NAME = re.compile(r"^(BASE|IN|OUT|M|MID)(\d*)$")


def block_layout(keys: Iterable[str]) -> list[str]:
    """Block names for a UNet with the input blocks found in ``keys``."""
    n = 0
    for k in keys:
        m = _INPUT.match(k[len(UNET):]) if k.startswith(UNET) else None
        if m:
            n = max(n, int(m.group(1)) + 1)
    n = n or 12
    return ["BASE", *(f"IN{i:02d}" for i in range(n)), "M00", *(f"OUT{i:02d}" for i in range(n))]


def block_of(key: str, layout: list[str]) -> str:
    """The block a checkpoint key belongs to."""
    if not key.startswith(UNET):
        return "BASE"
    rest = key[len(UNET):]
    if rest.startswith(("time_embed.", "label_emb.")):
        return "IN00"
    if rest.startswith("middle_block."):
        return "M00"
    if rest.startswith("out."):
        return layout[-1]
    for pattern, prefix in ((_INPUT, "IN"), (_OUTPUT, "OUT")):
        m = pattern.match(rest)
        if m:
            name = f"{prefix}{int(m.group(1)):02d}"
            if name in layout:
                return name
    return "BASE"


def parse_block_weights(spec: str, layout: list[str], alpha: float) -> dict[str, float]:
    """Weights per block from ``spec``.

    Accepted forms: all values in layout order (26 for SD1/SD2, 20 for SDXL, starting with
    BASE); the same without BASE (25/19; BASE takes ``alpha``); or named values such as
    ``"IN00=0.2, M00:1, OUT11=0"`` (``MID`` is M00), with unnamed blocks taking ``alpha``.
    """
    parts = [p.strip() for p in re.split(r"[,\s]+", spec.strip()) if p.strip()]
    if not parts:
        raise BadRequest("block weights are empty")
    weights = dict.fromkeys(layout, alpha)
    if any("=" in p or ":" in p for p in parts):
        for p in parts:
            name, sep, value = p.replace(":", "=").partition("=")
            if not sep:
                raise BadRequest(f"block weight '{p}' mixes named and positional values; write NAME=value")
            weights[_normalise(name, layout)] = _number(value, p)
        return weights
    values = [_number(v, v) for v in parts]
    n = len(layout)
    if len(values) == n - 1:
        values = [alpha, *values]
    if len(values) != n:
        raise BadRequest(f"{len(values)} block weights given; this model needs {n} (BASE, IN00-"
                         f"{layout[(n - 2) // 2]}, M00, OUT00-{layout[-1]}) or {n - 1} without BASE")
    return dict(zip(layout, values, strict=True))


def _normalise(name: str, layout: list[str]) -> str:
    m = _NAME.match(name.strip().upper())
    if not m:
        raise BadRequest(f"unknown block name '{name}'; use BASE, IN00.., M00 (or MID), OUT00..")
    kind, num = m.groups()
    if kind == "BASE":
        return "BASE"
    if kind in ("M", "MID"):
        return "M00"
    out = f"{kind}{int(num or 0):02d}"
    if out not in layout:
        raise BadRequest(f"block {out} does not exist in this model (it has {layout[1]}-{layout[-1]})")
    return out


def _number(text: str, context: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"block weight '{context}' is not a number") from None
