"""Random-weight upscaler files in the key layouts users' files have, for tests and benches
(no weights ship with sdcloud): original ESRGAN (``model.N``), basicsr RRDBNet
(``params_ema`` / ``conv_up1``) and Real-ESRGAN compact (``params`` / ``body.N``)."""

from __future__ import annotations

from pathlib import Path

import torch

from sdcloud.upscalers import archs


def _random(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return {k: v.clone() for k, v in net.state_dict().items()}


def rrdb_state(params: archs.RRDBParams, layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """``layout``: "old" (ESRGAN repo, e.g. 4x-UltraSharp) or "basicsr" (RealESRGAN_x4plus)."""
    ours = _random(archs.RRDBNet(params), seed)
    out: dict[str, torch.Tensor] = {}
    n = params.num_up
    for key, value in ours.items():
        parts = key.split(".")
        if layout == "basicsr":
            out[f"conv_up{int(parts[1]) + 1}.{parts[2]}" if parts[0] == "ups" else key] = value
            continue
        if parts[0] == "conv_first":
            new = f"model.0.{parts[1]}"
        elif parts[0] == "body":
            new = f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"
        elif parts[0] == "conv_body":
            new = f"model.1.sub.{params.nb}.{parts[1]}"
        elif parts[0] == "ups":
            new = f"model.{3 + 3 * int(parts[1])}.{parts[2]}"
        elif parts[0] == "conv_hr":
            new = f"model.{3 * n + 2}.{parts[1]}"
        else:
            new = f"model.{3 * n + 4}.{parts[1]}"
        out[new] = value
    return out


def compact_state(params: archs.CompactParams, seed: int = 0) -> dict[str, torch.Tensor]:
    return _random(archs.SRVGGNetCompact(params), seed)


def save_esrgan_old(path: Path, nf: int = 8, nb: int = 1, gc: int = 4, scale: int = 4, seed: int = 0) -> Path:
    """A .pth in the original ESRGAN layout (a plain state dict, like 4x-UltraSharp.pth)."""
    num_up = {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rrdb_state(archs.RRDBParams(3, 3, nf, nb, gc, num_up, 1), "old", seed), path)
    return path


def save_basicsr_rrdb(path: Path, nf: int = 8, nb: int = 1, gc: int = 4, scale: int = 4, seed: int = 0) -> Path:
    """A .pth as basicsr saves it: ``{"params_ema": ...}``; scale 2 uses pixel-unshuffle input."""
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    state = rrdb_state(archs.RRDBParams(3, 3, nf, nb, gc, 2, unshuffle), "basicsr", seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": state}, path)
    return path


def save_compact(path: Path, nf: int = 8, num_conv: int = 2, scale: int = 4, seed: int = 0) -> Path:
    """A .pth like realesr-general-x4v3: ``{"params": body.N...}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": compact_state(archs.CompactParams(3, 3, nf, num_conv, scale), seed)}, path)
    return path
