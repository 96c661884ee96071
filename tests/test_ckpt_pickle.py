"""Safe loading of pickled checkpoints: malicious pickles are refused and never executed."""

from __future__ import annotations

import os
import random
import sys
import types
from pathlib import Path

import pytest
import torch

from sdcloud.checkpoints.pickle_safe import load_ckpt_state_dict
from sdcloud.errors import CorruptFile, UnsafeFile


class _Payload:
    """Unpickling this runs ``os.system('touch <target>')``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _sd() -> dict[str, torch.Tensor]:
    return {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None]}


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, zip_format: bool) -> None:
    target = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _sd(), "callback": _Payload(target)}, ckpt,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeFile) as err:
        load_ckpt_state_dict(ckpt)
    assert "system" in str(err.value)  # names the offending global (posix.system)
    assert not target.exists()


def test_plain_checkpoint_loads_and_unwraps_state_dict(tmp_path: Path) -> None:
    sd = _sd()
    ckpt = tmp_path / "ok.ckpt"
    torch.save({"state_dict": sd, "global_step": 1234, "epoch": 3}, ckpt)
    out = load_ckpt_state_dict(ckpt)
    assert set(out) == set(sd)
    for k in sd:
        assert torch.equal(out[k], sd[k])


def test_lightning_callback_state_is_tolerated_without_importing_lightning(tmp_path: Path,
                                                                          monkeypatch) -> None:
    # Real SD 1.x training checkpoints carry a pytorch_lightning ModelCheckpoint. Pickle it from
    # a fake module, then remove the module: loading must not need (or import) Lightning.
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = mod.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__):
        monkeypatch.setitem(sys.modules, name, mod if name == mod.__name__ else types.ModuleType(name))
    cb = ModelCheckpoint()
    cb.best_model_path = "/x"
    ckpt = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": _sd(), "callbacks": {"ModelCheckpoint": cb}}, ckpt)
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__):
        monkeypatch.delitem(sys.modules, name)
    out = load_ckpt_state_dict(ckpt)
    assert set(out) == set(_sd())
    assert "pytorch_lightning" not in sys.modules


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_is_corrupt_not_a_crash(tmp_path: Path, damage: str) -> None:
    ckpt = tmp_path / "bad.ckpt"
    torch.save(_sd(), ckpt)
    data = ckpt.read_bytes()
    garbage = random.Random(2).randbytes(4096)  # these bytes make the unpickler raise IndexError
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncate" else garbage)
    with pytest.raises(CorruptFile):
        load_ckpt_state_dict(ckpt)
