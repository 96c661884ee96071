"""Load ``.ckpt`` / ``.pt`` / ``.bin`` pickles without ever trusting them.

A pickle can import and call anything, so we only use torch's ``weights_only`` unpickler
(tensors, storages, plain containers) and ``mmap=True`` so the storages stay on disk until a
tensor is touched (reference/checkpoints.md §7). Two extras found in real SD 1.x training
checkpoints are let through as inert placeholders, never imported: PyTorch Lightning's
``ModelCheckpoint`` callback state and numpy scalars/dtypes (from ``best_model_score``).
Anything else is refused before a single opcode of it runs, naming the global.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdcloud.errors import CorruptFile, UnsafeFile

if TYPE_CHECKING:
    import torch

_INERT_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",)
_NUMPY_GLOBALS = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)
_GLOBAL_IN_ERROR = re.compile(r"GLOBAL (\S+)")


class _InertObject:
    """Stands in for an allowlisted training-time object; its pickled state is discarded."""

    def __setstate__(self, state: Any) -> None:
        del state


def _extra_safe_globals() -> list[Any]:
    extras: list[Any] = [(_InertObject, name) for name in _INERT_GLOBALS]
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        return extras
    extras.append((np.dtype, "numpy.dtype"))
    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
    extras += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    extras += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8")]
    return extras


def _refuse(path: Path, names: list[str]) -> UnsafeFile:
    shown = ", ".join(sorted(names)[:5])
    return UnsafeFile(
        f"{path.name}: refusing to load this pickle: it needs {shown}, which a plain tensor "
        "checkpoint never does (it could run code on this machine). Get a .safetensors "
        "version of the model, or convert it on a throwaway machine you trust."
    )


def load_ckpt_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a pickled checkpoint (``state_dict`` unwrapped), loaded safely and lazily.

    Raises ``UnsafeFile`` if the pickle needs any global beyond plain tensors (never
    executing it) and ``CorruptFile`` if the file is truncated or not a torch pickle.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CorruptFile(f"{path}: no such file")
    is_zip = zipfile.is_zipfile(path)
    with torch.serialization.safe_globals(_extra_safe_globals()):
        if is_zip:
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:  # a broken archive: torch.load below says why
                unsafe = []
            if unsafe:
                raise _refuse(path, unsafe)
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as err:
            found = _GLOBAL_IN_ERROR.findall(str(err))
            if found or "unrecognized function" in str(err) or "allowlisted" in str(err):
                raise _refuse(path, found or [str(err).splitlines()[0]]) from None
            raise CorruptFile(f"{path.name}: not a readable torch checkpoint ({err})") from None
        except Exception as err:  # garbage makes the unpickler fail in many ways (IndexError...)
            raise CorruptFile(
                f"{path.name}: not a readable torch checkpoint (truncated or damaged? {err})"
            ) from None
    return _tensors_of(path, obj)


def _tensors_of(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    import torch

    for wrapper in ("state_dict", "params_ema", "params"):  # basicsr (Real-ESRGAN) nests its weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise CorruptFile(f"{path.name}: holds a {type(obj).__name__}, not a dict of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CorruptFile(f"{path.name}: contains no tensors")
    return tensors
