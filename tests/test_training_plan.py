"""``plan`` with a LoRA training: per-GPU training time from steps, batch and size; the dataset's
epochs; memory presets and the fit warning that ``doctor`` and the trainer give."""

from __future__ import annotations

import json
from pathlib import Path

from sdcloud.cli import main
from sdcloud.cloud.planner import Planner, Workload, training_hours
from sdcloud.cloud.price_catalog import load_price_catalog
from sdcloud.cloud.throughput import ThroughputTable
from sdcloud.training.config import TrainConfig
from sdcloud.training.presets import PRESETS, apply_preset, estimate_vram_gb, fit_warning
from training_data import make_dataset


def test_training_time_scales_with_steps_batch_and_size() -> None:
    catalog = load_price_catalog([])
    table = ThroughputTable(catalog.throughput)
    base = Workload(family="sd15", train_steps=1500, train_batch=2)
    t4 = training_hours(table, base, "T4")[0]
    assert 0.1 < t4 < 2.0  # SD1.5 LoRA, 1500 steps at batch 2 on a T4: tens of minutes
    assert training_hours(table, Workload(family="sd15", train_steps=3000, train_batch=2), "T4")[0] == 2 * t4
    assert training_hours(table, Workload(family="sd15", train_steps=1500, train_batch=4), "T4")[0] == 2 * t4
    assert training_hours(table, Workload(family="sdxl", train_steps=1500, train_batch=2), "T4")[0] > 3 * t4
    a100 = training_hours(table, base, "A100-40GB" if "A100-40GB" in catalog.vram_gb else "A100")
    assert a100 is None or a100[0] < t4
    plan = Planner(catalog, table).plan(base, providers=["colab"])
    t4_rows = [r for r in plan.rows if r.gpu == "T4" and r.plan != "Free"]
    assert t4_rows and all(abs(r.gpu_hours - t4) < 1e-9 for r in t4_rows)
    assert any("LoRA training on T4" in n for n in t4_rows[0].notes)


def test_plan_command_reports_the_dataset(tmp_path: Path, capsys) -> None:
    root = make_dataset(tmp_path / "ds")
    assert main(["plan", "--train-steps", "100", "--train-batch", "2", "--train-size", "64",
                 "--train-dataset", str(root), "--provider", "colab", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["notes"][0].startswith("Training dataset: 4 images (20 samples per epoch with repeats); "
                                      "100 steps x batch 2 = 10.0 epochs")
    assert out["workload"]["train_steps"] == 100


def test_presets_follow_kohya_and_the_fit_warning() -> None:
    t4 = apply_preset(TrainConfig(), "sdxl-t4")
    assert (t4.mixed_precision, t4.gradient_checkpointing, t4.optimizer, t4.unet_only) == \
        ("fp16", True, "AdamW8bit", True)
    assert estimate_vram_gb(t4, "sdxl") <= PRESETS["sdxl-t4"].vram_gb
    for name, preset in PRESETS.items():
        assert estimate_vram_gb(apply_preset(TrainConfig(), name), preset.family) <= preset.vram_gb, name
    plain_xl = TrainConfig(resolution=1024, batch=2)
    warning = fit_warning(plain_xl, "sdxl", 16)
    assert warning and "GB of VRAM but the GPU has 16 GB" in warning and "--preset sdxl-t4" in warning
    assert fit_warning(t4, "sdxl", 16) is None and fit_warning(plain_xl, "sdxl", None) is None


def test_doctor_warns_when_the_training_will_not_fit_the_gpu(tmp_path: Path) -> None:
    from sdcloud.cloud.doctor import run_doctor
    from sdcloud.settings import Settings
    from test_cloud_doctor import GOOD, T4, FakeProbe

    probe = FakeProbe(tmp_path, gpus=[T4], versions=GOOD)
    settings = Settings(data_dir=tmp_path / "d")
    heavy = run_doctor(settings, env={}, root=tmp_path, probe=probe, train=(TrainConfig(resolution=1024), "sdxl"))
    finding = next(f for f in heavy.findings if f.topic == "training")
    assert finding.level == "warn" and "the GPU has 15 GB; try --preset sdxl-t4" in finding.detail
    light = run_doctor(settings, env={}, root=tmp_path, probe=probe,
                       train=(apply_preset(TrainConfig(), "sd15-8gb"), "sd1"))
    assert next(f for f in light.findings if f.topic == "training").level == "ok"
    (tmp_path / "t.toml").write_text('memory_preset = "sdxl-t4"\nsteps = 100\n', encoding="utf-8")
    assert main(["--data-dir", str(tmp_path / "d"), "doctor", "--train-config", str(tmp_path / "t.toml")]) in (0, 1)


def test_fit_warning_reads_the_family_from_the_file_not_its_name(tmp_path: Path) -> None:
    """An SDXL checkpoint without "xl" in its name (Pony, Juggernaut, ...) gets the SDXL memory
    estimate of the GPU fit warning; the header is read, the model is not loaded."""
    from sdcloud.engine.demo import write_demo_checkpoint
    from sdcloud.settings import Settings
    from sdcloud.training.model import model_family

    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_demo_checkpoint(folder / "ponyish.safetensors", "sdxl", seed=1)
    write_demo_checkpoint(folder / "plain.safetensors", "sd15", seed=1)
    settings = Settings(data_dir=tmp_path)
    assert model_family(settings, "ponyish") == "sdxl"
    assert model_family(settings, "plain") == "sd1"
    assert model_family(settings, "demo-xl") == "sdxl" and model_family(settings, "demo") == "sd1"
