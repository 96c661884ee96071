"""ControlNet model files in ``models/ControlNet``: listed by stem (torch-free), loaded as a
diffusers ``ControlNetModel`` shaped like the loaded checkpoint's UNet (the shipped UNet
config, so nothing is fetched): A1111-style single files (``control_model.input_blocks...``,
e.g. control_v11p_sd15_canny.pth) are converted with diffusers' converter; diffusers-layout
files (most SDXL ControlNets) and diffusers folders load directly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from sdcloud.errors import Unsupported

log = logging.getLogger(__name__)

EXTS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,12}\]$")


def scan(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(p.startswith(".") for p in rel.parts) or "annotators" in rel.parts:
            continue
        if path.is_file() and path.suffix.lower() in EXTS and not (path.parent / "config.json").exists():
            out.append(path)
        elif path.is_dir() and (path / "config.json").is_file():
            out.append(path)
    return out


def name_of(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def resolve(folder: Path, name: str) -> Path:
    """A unit's ``model``: a stem, a file name, or sd-webui-controlnet's ``stem [hash]`` title."""
    wanted = _HASH.sub("", name.strip())
    files = scan(folder)
    for match in (lambda p: name_of(p) == wanted, lambda p: p.name == wanted,
                  lambda p: name_of(p).lower() == wanted.lower()):
        hits = [p for p in files if match(p)]
        if hits:
            return hits[0]
    # the folder by its name only: the server's absolute paths stay out of answers (and in the log)
    log.info("ControlNet model %r not found in %s", name, folder)
    names = ", ".join(name_of(p) for p in files) or "none (put ControlNet model files in models/ControlNet/)"
    raise Unsupported(f"ControlNet model '{name}' not found; available: {names}; "
                      "list them with GET /controlnet/model_list")  # 422, as the extension


def _read(path: Path) -> dict[str, Any]:
    from sdcloud.upscalers.loading import read_state_dict

    return read_state_dict(path)


def load_controlnet(path: Path, unet: Any) -> Any:
    """A ``ControlNetModel`` for ``unet``'s architecture with ``path``'s weights."""
    import torch
    from diffusers import ControlNetModel

    if path.is_dir():
        try:
            return ControlNetModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise Unsupported(f"{path.name}: not a diffusers ControlNet folder ({str(exc).splitlines()[0][:160]})") \
                from None
    state = _read(path)
    if any(k.startswith("control_model.") for k in state) or "input_hint_block.0.weight" in state:
        layout = "A1111"
    elif "controlnet_cond_embedding.conv_in.weight" in state:
        layout = "diffusers"
    else:
        kind = "a T2I-Adapter" if any("adapter" in k for k in list(state)[:50]) else "not a ControlNet"
        raise Unsupported(f"{path.name}: {kind} ({len(state)} tensors, first keys {', '.join(list(state)[:3])})")
    cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    if layout == "A1111":
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        state = convert_controlnet_checkpoint(state, dict(cn.config))
        state = {k: v for k, v in state.items() if v is not None}
    want = cn.state_dict()
    bad = [k for k, v in want.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        got = tuple(state[k].shape) if k in state else "missing"
        raise Unsupported(f"{path.name}: a ControlNet for another model ('{k}': {got}, this model needs "
                          f"{tuple(want[k].shape)}); SD 1.5 and SDXL ControlNets are not interchangeable")
    cn.load_state_dict({k: state[k] for k in want}, strict=True)
    cn = cn.eval().requires_grad_(False).to(unet.device if unet.device.type != "meta" else torch.device("cpu"))
    return cn if cn.dtype == unet.dtype else cn.to(dtype=unet.dtype)


class ControlNetCache:
    """The ControlNets loaded for one pipeline (kept until the checkpoint changes)."""

    def __init__(self, folder: Path, unet: Any) -> None:
        self.folder = folder
        self.unet = unet
        self._models: dict[Path, Any] = {}

    def get(self, name: str) -> tuple[Any, str]:
        path = resolve(self.folder, name)
        if path not in self._models:
            if len(self._models) >= 4:  # bound the memory: drop the oldest
                self._models.pop(next(iter(self._models)))
            self._models[path] = load_controlnet(path, self.unet)
            log.info("loaded ControlNet %s", path.name)
        return self._models[path], name_of(path)
