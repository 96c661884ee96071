"""Toolkit outputs load and generate in the engine: merged, pruned and LoRA-baked demo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdcloud.checkpoints.lora_bake import LoraBakeOptions, bake_loras
from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
from sdcloud.checkpoints.prune import PruneOptions, prune_checkpoint
from sdcloud.engine.demo import write_demo_checkpoint
from sdcloud.engine.engine import Engine
from sdcloud.engine.types import GenerationRequest
from sdcloud.settings import Settings


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Engine, Path, np.ndarray]:
    """An engine, the checkpoint folder with demo models seeded 1 and 2, and model 1's image."""
    data = tmp_path_factory.mktemp("data")
    settings = Settings.load({"data_dir": data}, env={})
    settings.ensure_dirs()
    folder = settings.checkpoints_path
    write_demo_checkpoint(folder / "one.safetensors", seed=1)
    write_demo_checkpoint(folder / "two.safetensors", seed=2)
    engine = Engine(settings)
    return engine, folder, _image(engine, folder / "one.safetensors")


def _image(engine: Engine, model: Path) -> np.ndarray:
    engine.load_model(str(model))
    req = GenerationRequest(prompt="a red cube", seed=3, steps=2, width=64, height=64)
    result = engine.generate(req)
    return np.asarray(result.images[0], dtype=np.float32)


def test_merged_demo_checkpoints_load_and_generate(setup) -> None:
    engine, folder, one = setup
    out = folder / "merged.safetensors"
    res = merge_checkpoints(MergeOptions(a=folder / "one.safetensors", b=folder / "two.safetensors",
                                         output=out, alpha=0.5, dtype="fp16"))
    assert res.arch == "SD 1.x"
    merged = _image(engine, out)
    assert merged.shape == (64, 64, 3) and np.isfinite(merged).all()
    # a different model than its parent, so a different picture from the same seed
    assert np.abs(merged - one).mean() > 1


def test_pruned_and_lora_baked_demo_checkpoints_generate(setup) -> None:
    engine, folder, one = setup
    src = folder / "one.safetensors"
    pruned = folder / "one-pruned.safetensors"
    prune_checkpoint(PruneOptions(src, pruned, dtype="bf16"))
    assert all(t.dtype in (torch.bfloat16, torch.int64) for t in load_file(str(pruned)).values())
    assert _image(engine, pruned).std() > 0
    sd = load_file(str(src))
    key = next(k for k in sd if k.endswith("attn2.to_k.weight") and "input_blocks" in k)
    parts = key.removeprefix("model.diffusion_model.").removesuffix(".weight").split(".")
    name = "lora_unet_" + "_".join(parts)  # LDM-style kohya name
    out_f, in_f = sd[key].shape
    lora = folder / "l.safetensors"
    save_file({f"{name}.lora_down.weight": torch.randn(2, in_f),
               f"{name}.lora_up.weight": torch.randn(out_f, 2),
               f"{name}.alpha": torch.tensor(2.0)}, str(lora))
    baked = folder / "one-lora.safetensors"
    res = bake_loras(LoraBakeOptions(src, ((lora, 3.0),), baked))
    assert res.applied == {"l.safetensors": 1}
    img = _image(engine, baked)
    assert np.isfinite(img).all() and np.abs(img - one).mean() > 0
