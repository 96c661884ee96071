"""The training benchmark: ``measure_training_step`` (bench/gpu_check.py's training row) times the
trainer's own ``train_step`` against a bare diffusers + peft loop on the same LoRA targets, and
gives the pipeline back exactly as it came; ``bench/train_throughput.py`` prints both medians and
the ratio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdcloud.engine.demo import build_demo_pipeline
from sdcloud.settings import Settings
from sdcloud.training import benchmark
from sdcloud.training.config import TrainConfig
from sdcloud.training.model import BaseModel
from sdcloud.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _unet_out(pipe) -> torch.Tensor:  # noqa: ANN001
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn((1, 4, 16, 16), generator=gen)
    cond = torch.randn((1, 77, pipe.unet.config.cross_attention_dim), generator=gen)
    kwargs = {}
    if pipe.unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn((1, pipe.text_encoder_2.config.projection_dim),
                                                                  generator=gen),
                                       "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]])}
    with torch.no_grad():
        return pipe.unet(sample, torch.tensor([500]), cond, **kwargs).sample


@pytest.mark.parametrize("kind, family", [("sd15", "sd15"), ("sdxl", "sdxl")])
def test_hook_times_the_trainers_own_step_and_leaves_the_pipeline_as_it_was(kind: str, family: str,
                                                                             monkeypatch) -> None:
    pipe = build_demo_pipeline(kind)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    before = _unet_out(pipe)
    modules_before = {n: type(m).__name__ for n, m in pipe.unet.named_modules()}
    calls = []
    real_step = Trainer.train_step

    def counting(self, micro_batches, step):  # noqa: ANN001, ANN202
        calls.append(step)
        return real_step(self, micro_batches, step)

    monkeypatch.setattr(Trainer, "train_step", counting)
    res = benchmark.measure_training_step(pipe, family=family, resolution=64, batch=2, steps=4, device="cpu",
                                          dtype=torch.float32, rank=4, warmup=1, repeats=2)
    assert len(calls) == 1 + 4  # warm-up + 2 windows x 2 steps, all through Trainer.train_step
    assert res["steps_per_s"] > 0 and res["baseline_steps_per_s"] > 0
    assert res["ratio"] == pytest.approx(res["baseline_steps_per_s"] / res["steps_per_s"])
    assert len(res["windows"]["ours"]) == len(res["windows"]["bare"]) == 2
    assert "ratio ours/bare" in res["note"] and res["peak_vram_gb"] is None  # no CUDA here
    # the pipeline is given back as it came: no LoRA layers, same output, frozen, eval, fp32, CPU
    assert {n: type(m).__name__ for n, m in pipe.unet.named_modules()} == modules_before
    assert not hasattr(pipe.unet, "peft_config")
    torch.testing.assert_close(_unet_out(pipe), before, rtol=0, atol=0)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        assert next(m.parameters()).dtype == torch.float32


def test_bare_loop_trains_the_same_lora_targets(tmp_path: Path) -> None:
    pipe = build_demo_pipeline("sd15")
    import copy

    bare_unet = copy.deepcopy(pipe.unet)
    data = benchmark.make_dataset(tmp_path / "ds", 4, 64)
    cfg = TrainConfig(dataset=str(data), model="x", name="b", steps=100, rank=4, alpha=2, resolution=64, batch=2,
                      save_state_every=0, cache_latents_to_disk=False, min_snr_gamma=5.0, noise_offset=0.05)
    trainer = benchmark.prepared_trainer(cfg, Settings(data_dir=tmp_path / "data"), torch.device("cpu"),
                                         BaseModel(pipe, "sd1", "epsilon", "demo", "demo"))
    bare = benchmark.BareLoop(trainer, bare_unet)
    assert sum(p.numel() for p in bare.params) == sum(p.numel() for p in trainer.trainable) > 0
    ours = benchmark.OursLoop(trainer)
    for _ in range(3):
        ours()
        bare()
    assert len(ours.losses) == len(bare.losses) == 3
    assert all(0 < v < 10 for v in ours.losses + bare.losses)


def test_train_throughput_script_prints_both_medians_and_the_ratio() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--warmup", "1",
                           "--window", "1", "--repeats", "2", "--rank", "4", "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "1 thread(s) for both sides" in out and "load average" in out
    assert "bare diffusers+peft  median" in out and "sdcloud trainer      median" in out
    assert out.count("ratio ours/bare: ") == 2 and "(target <= 1.05)" in out  # wall and CPU time
    assert "CPU time of this process" in out
