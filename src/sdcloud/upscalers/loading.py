"""Load an upscaler file: our own ESRGAN/RRDBNet and Real-ESRGAN compact first (they run
everywhere), then spandrel for the long tail (SwinIR, DAT, HAT, OmniSR, ...) where it imports.

A file that is neither is refused with one line naming the file and what it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdcloud.errors import Unsupported
from sdcloud.upscalers import archs

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """An image-to-image network: ``net`` maps (N, C, H, W) in [0, 1] to (N, C, H*scale, W*scale)."""

    net: Any
    scale: int
    arch: str
    purpose: str = "SR"  # spandrel's: "SR", "FaceSR", "Restoration", ...
    supports_half: bool = True  # some spandrel architectures (DAT, ...) need float32

    def to(self, device: torch.device, dtype: torch.dtype) -> LoadedModel:
        self.net = self.net.to(device=device, dtype=dtype)
        return self


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or a (safely loaded) pickle, ``params_ema``/``module.`` unwrapped."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            from sdcloud.errors import CorruptFile

            raise CorruptFile(f"{path.name}: not a readable safetensors file ({exc})") from None
    else:
        from sdcloud.checkpoints.pickle_safe import load_ckpt_state_dict

        state = load_ckpt_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def spandrel_error() -> str | None:
    """Why spandrel cannot be used here (None when it imports)."""
    try:
        import spandrel  # noqa: F401
    except ImportError as exc:  # no spandrel, or torchvision missing/mismatched beside a CPU torch
        return f"spandrel cannot be imported ({str(exc).splitlines()[0][:120]})"
    except Exception as exc:  # a torchvision built for another torch fails in many ways
        return f"spandrel cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def _summary(state: dict[str, torch.Tensor]) -> str:
    keys = list(state)
    return f"{len(keys)} tensors, first keys {', '.join(keys[:3])}"


def build_builtin(state: dict[str, torch.Tensor]) -> LoadedModel | None:
    """Our own nets, or None if the keys are none of theirs."""
    found = archs.detect_rrdb(state)
    if found is not None:
        params, ours = found
        net = archs.RRDBNet(params)
        net.load_state_dict(ours, strict=True)
        return LoadedModel(net.eval().requires_grad_(False), params.scale, "ESRGAN")
    compact = archs.detect_compact(state)
    if compact is not None:
        net = archs.SRVGGNetCompact(compact)
        net.load_state_dict(state, strict=True)
        return LoadedModel(net.eval().requires_grad_(False), compact.scale, "RealESRGAN-compact")
    return None


def load_model(path: Path, *, allow_spandrel: bool = True) -> LoadedModel:
    """Load an upscaler or restorer file; ``Unsupported`` (one line) if nothing recognises it."""
    state = read_state_dict(path)
    try:
        model = build_builtin(state)
    except RuntimeError as exc:  # keys of the family, shapes inconsistent
        raise Unsupported(f"{path.name}: looks like ESRGAN but its tensors do not fit "
                          f"({str(exc).splitlines()[0][:160]})") from None
    if model is not None:
        return model
    why = spandrel_error() if allow_spandrel else "spandrel is not used for this"
    if why is None:
        from spandrel import ModelLoader, UnsupportedModelError

        try:
            desc = ModelLoader().load_from_state_dict(state)
        except UnsupportedModelError:
            raise Unsupported(f"{path.name}: not an upscaler or face restorer spandrel knows "
                              f"({_summary(state)})") from None
        except (RuntimeError, KeyError, ValueError) as exc:
            raise Unsupported(f"{path.name}: spandrel could not load it ({str(exc).splitlines()[0][:160]})") \
                from None
        net = desc.model.eval().requires_grad_(False)
        return LoadedModel(net, int(desc.scale), desc.architecture.name, str(desc.purpose),
                           bool(getattr(desc, "supports_half", False)))
    raise Unsupported(f"{path.name}: not ESRGAN/RRDBNet or Real-ESRGAN compact ({_summary(state)}); "
                      f"other architectures need spandrel, but {why}")
