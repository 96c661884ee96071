"""Real runs feed the planner: a finished generation on a catalog GPU appends a throughput
measurement that ``sdcloud plan``'s table then prefers over the published figure.

No GPU can run here, so the engine's device is a stand-in ``cuda`` device and
``torch.cuda.get_device_name`` is patched to name an A100; everything else is real."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sdcloud.cloud.price_catalog import load_price_catalog
from sdcloud.cloud.speed_recorder import record_speed
from sdcloud.cloud.throughput import MEASUREMENTS_FILE, ThroughputTable
from sdcloud.engine.loader import ModelInfo
from sdcloud.engine.types import GenerationRequest, GenerationResult
from sdcloud.settings import Settings


def _result(n: int) -> GenerationResult:
    return GenerationResult(images=[object()] * n, infotexts=[""] * n, seeds=[1] * n, subseeds=[1] * n,
                            prompts=[""] * n, negative_prompts=[""] * n, model_name="m", model_hash=None)


def test_gpu_runs_are_recorded_and_used_by_the_planner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA A100-SXM4-40GB")
    settings = Settings(data_dir=tmp_path)
    info = ModelInfo("real", "real.safetensors [x]", "/m/real.safetensors", "ab" * 32, "sd1", "base", "epsilon")
    engine = SimpleNamespace(device=torch.device("cuda"), current=info)
    req = GenerationRequest(steps=20, width=512, height=512)
    for _ in range(3):
        record_speed(settings, engine, req, _result(2), seconds=2.0)  # 1 s per image → 20 it/s
    catalog = load_price_catalog()
    gpu = catalog.gpu_for_device_name("NVIDIA A100-SXM4-40GB")
    table = ThroughputTable(catalog.throughput, settings.state_path / MEASUREMENTS_FILE)
    speed = table.speed("sd15", gpu)
    assert speed is not None and speed.source.startswith("measured") and speed.it_s == pytest.approx(20.0)


def test_cpu_and_demo_runs_are_not_measurements(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    demo = ModelInfo("demo", "demo", None, None, "sd1", "base", "epsilon", True)
    req = GenerationRequest(steps=20, width=512, height=512)
    record_speed(settings, SimpleNamespace(device=torch.device("cpu"), current=demo), req, _result(1), 1.0)
    record_speed(settings, SimpleNamespace(device=torch.device("cuda"), current=demo), req, _result(1), 1.0)
    assert not (settings.state_path / MEASUREMENTS_FILE).exists()
