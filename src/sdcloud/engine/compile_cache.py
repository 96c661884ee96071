"""``torch.compile``'s cache kept with the session, so a new machine does not compile again.

torch (2.6+) can hand out everything its compilers cached as one blob
(``torch.compiler.save_cache_artifacts``) and take it back on another machine
(``torch.compiler.load_cache_artifacts``). The blob lives in ``<state>/compile-cache/``, named
for the torch version and the GPU (a cache from another pair is of no use), and travels with
the session to and from the store. Every call is guarded: an older torch, or a blob torch
refuses, only means compiling again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("sdcloud.engine")
FOLDER = "compile-cache"


def _device_tag() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = "cpu"
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()


def cache_file(state_path: Path) -> Path:
    version = torch.__version__.split("+")[0]
    return state_path / FOLDER / f"torch-{version}-{_device_tag()}.bin"


def supported() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler) and hasattr(compiler, "save_cache_artifacts") and hasattr(compiler, "load_cache_artifacts")


def load_artifacts(state_path: Path) -> str:
    """Load the cache for this torch and GPU if there is one; says what happened."""
    if not supported():
        return f"not supported by torch {torch.__version__}"
    path = cache_file(state_path)
    if not path.is_file():
        return "no cache yet"
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - any failure only means compiling again
        log.warning("torch.compile cache %s not used: %s", path, err)
        return f"not used: {err}"
    if info is None:  # torch logs why (e.g. a corrupted file) and carries on
        return "not used: torch refused it"
    return f"loaded {path.stat().st_size / 1e6:.2f} MB"


def save_artifacts(state_path: Path) -> Path | None:
    """Write what torch has compiled so far; the file, or None when there is nothing."""
    if not supported():
        return None
    try:
        result = torch.compiler.save_cache_artifacts()
    except Exception as err:  # noqa: BLE001
        log.warning("torch.compile cache not saved: %s", err)
        return None
    if not result:
        return None
    blob = result[0]
    path = cache_file(state_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return path
