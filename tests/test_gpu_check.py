"""bench/gpu_check.py, the one prepared GPU check, runs here on the CPU at tiny sizes so that it
never rots before a GPU is lent; and the CUDA-path logic that a CPU can run (the fp16 VAE NaN
fallback, the planner's throughput data) is checked here for real."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), out


def _rows(data: dict) -> dict[str, dict]:
    return {r["key"]: r for r in data["rows"]}


def test_cpu_smoke_measures_engine_against_diffusers(smoke):
    proc, data, _ = smoke
    assert data["device"] == "cpu" and data["tiny"] is True
    rows = _rows(data)
    for family in ("sd15", "sdxl"):
        for batch in (1, 4):
            row = rows[f"{family}.engine.b{batch}"]
            assert row["status"] == "ok", row
            assert row["unit"] == "it/s" and row["ours"] > 0 and row["base"] > 0
            assert row["ratio"] == pytest.approx(row["base"] / row["ours"])
            assert row["target"] is None  # tiny ratios are overheads: no verdict
            assert "e2e ratio" in row["note"]
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(row["check"]))
            assert "ratio" in line and "it/s" in line


def test_cpu_smoke_runs_the_vae_fallback_and_merge_and_says_what_it_skipped(smoke):
    proc, data, _ = smoke
    rows = _rows(data)
    for family in ("sd15", "sdxl"):
        fallback = rows[f"{family}.vae_fallback"]
        assert fallback["status"] == "ok" and fallback["note"].startswith("recovered"), fallback
        for section in ("compile", "bf16", "medvram", "lowvram"):  # CUDA-only: said, not silently dropped
            row = rows[f"{family}.{section}"]
            assert row["status"] == "skipped" and ("CUDA" in row["note"] or "CPU" in row["note"]), row
        train = rows[f"{family}.train"]  # sdcloud.training.benchmark.measure_training_step, at tiny size
        assert train["status"] == "ok" and train["unit"] == "step/s", train
        assert train["ours"] > 0 and train["base"] > 0
        assert train["ratio"] == pytest.approx(train["base"] / train["ours"])
        assert train["target"] is None and "ratio ours/bare" in train["note"]  # tiny: no verdict
        for key in (f"{family}.refiner", f"{family}.refiner_parked"):  # issue 17: a second model mid-sampling
            assert rows[key]["status"] == "ok" and rows[key]["ours"] > 0, rows[key]
        assert rows[f"{family}.refiner_parked"]["note"] == "same image: yes"
        merge = rows[f"merge.{family}.cpu"]
        assert merge["status"] == "ok" and merge["ours"] > 0 and merge["base"] > 0, merge
        assert "every key" in merge["note"]
    assert not [r for r in data["rows"] if r["status"] == "failed"]
    table = proc.stdout.split("== sdcloud GPU check", 1)[1].splitlines()[1:]  # below its title line
    assert sum("ratio" in ln for ln in table) == sum(
        1 for r in data["rows"] if r["status"] == "ok" and r["ratio"] is not None)


def test_saved_json_renders_as_markdown_and_refuses_tiny_throughput(smoke, gpu_check, tmp_path, capsys):
    _, data, path = smoke
    assert gpu_check.main(["--from-json", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| check | ours | baseline | ratio (target)" in out
    assert f"| {_rows(data)['sd15.engine.b1']['check']} |" in out
    target = tmp_path / "catalog.json"
    with pytest.raises(SystemExit, match="needs a real-size run"):
        gpu_check.main(["--from-json", str(path), "--write-throughput", str(target)])
    assert not target.exists()


def test_saved_gpu_run_feeds_the_throughput_data(smoke, gpu_check, tmp_path, capsys):
    """What follows a lent-GPU run: its JSON comes back and feeds the planner here."""
    _, data, _ = smoke
    gpu_run = dict(data, tiny=False, quick=True, device="NVIDIA H100 80GB HBM3", gpu="H100")
    saved = tmp_path / "gpu_check.json"
    saved.write_text(json.dumps(gpu_run))
    catalog = tmp_path / "catalog.json"
    assert gpu_check.main(["--from-json", str(saved), "--write-throughput", str(catalog)]) == 0
    assert "throughput for H100" in capsys.readouterr().out
    written = json.loads(catalog.read_text())["throughput"]["families"]
    rows = _rows(data)
    for family in ("sd15", "sdxl"):
        entry = written[family]["gpus"]["H100"]
        assert entry["it_s"] == round(rows[f"{family}.engine.b1"]["ours"], 2)
        assert "bench/gpu_check.py" in entry["source"] and "H100" in entry["source"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot update"):
        gpu_check.main(["--from-json", str(saved), "--write-throughput", str(broken)])
    assert broken.read_text() == "{not json"


def test_help_and_bad_sections():
    help_ = subprocess.run([sys.executable, str(SCRIPT), "--help"], env=ENV, capture_output=True, text=True,
                           timeout=60)
    assert help_.returncode == 0
    for flag in ("--quick", "--json", "--only", "--write-throughput", "--compile"):
        assert flag in help_.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--only", "engine,warp"], env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0
    assert "unknown section or family warp" in bad.stderr and "Traceback" not in bad.stderr


def test_measured_speeds_feed_the_planner(gpu_check, tmp_path):
    from sdcloud.cloud.price_catalog import load_price_catalog
    from sdcloud.cloud.throughput import ThroughputTable

    Row = gpu_check.Row
    rows = [Row("sd15.engine.b1", "x", "it/s", 31.5, 31.0), Row("sdxl.engine.b1", "x", "it/s", 7.25, 7.3),
            Row("sd15.compile.b1", "x", "it/s", 40.0, 40.0), Row("sd15.engine.b4", "x", "it/s", 9.0, 9.0)]
    speeds = gpu_check.measured_speeds(rows)
    assert speeds == {"sd15": 31.5, "sdxl": 7.25}  # b1, default engine: the table's definition

    catalog = tmp_path / "catalog.json"  # a user's catalog file keeps what it had
    catalog.write_text(json.dumps({"currency": {"rates_per_usd": {"JPY": 150}}}))
    gpu_check.write_throughput(catalog, "H100", speeds, "bench/gpu_check.py test")
    merged = load_price_catalog([catalog])
    assert merged.rates.convert({"USD": 1.0}, "JPY") == pytest.approx(150)
    table = ThroughputTable(merged.throughput)
    assert table.speed("sd15", "H100").it_s == 31.5
    assert table.seconds_per_image("sdxl", "H100", 30, 1024, 1024)[0] == pytest.approx(30 / 7.25)
    assert table.speed("sd15", "T4").it_s == 3.65  # the packaged figures are still there

    packaged = tmp_path / "throughput.json"  # or the packaged table itself, in place
    shutil.copy(ROOT / "src/sdcloud/cloud/data/throughput.json", packaged)
    before = json.loads(packaged.read_text())
    gpu_check.write_throughput(packaged, "H100", {"sd15": 30.0}, "test")
    after = json.loads(packaged.read_text())
    assert after["families"]["sd15"]["gpus"]["H100"] == {"it_s": 30.0, "source": "test"}
    assert set(after["families"]["sd15"]["gpus"]) == set(before["families"]["sd15"]["gpus"]) | {"H100"}
    assert after["families"]["sdxl"] == before["families"]["sdxl"]


@pytest.mark.parametrize(("device_name", "label"), [("NVIDIA H100 80GB HBM3", "H100"),
                                                    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
                                                    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
                                                    ("Tesla T4", "T4")])
def test_gpu_label(gpu_check, device_name, label):
    assert gpu_check.gpu_label(device_name) == label


def test_engine_fp16_vae_nan_falls_back_to_fp32_on_cpu(tmp_path, gpu_check):
    """The engine's A1111-style --no-half-vae fallback, run for real: CPU convolutions take fp16,
    and a hook makes the fp16 decoder return NaN (as the SDXL VAE overflows)."""
    from sdcloud.engine.engine import Engine
    from sdcloud.engine.types import GenerationRequest
    from sdcloud.settings import Settings

    engine = Engine(Settings(data_dir=tmp_path, device="cpu"))
    engine.load_model("demo")
    vae = engine.pipeline.vae
    req = GenerationRequest(prompt="a cat", steps=1, width=64, height=64, seed=3, sampler_name="Euler")

    vae.to(torch.float16)
    plain = engine.generate(req).images[0]
    assert vae.dtype == torch.float16  # a finite fp16 decode keeps the VAE in fp16

    handle = vae.decoder.register_forward_hook(gpu_check._nan_in_half)
    try:
        forced = engine.generate(req).images[0]
    finally:
        handle.remove()
    assert vae.dtype == torch.float32  # and stays there, as A1111 does
    pixels = np.asarray(forced, dtype=np.float32)
    assert pixels.std() > 0
    assert np.abs(pixels - np.asarray(plain, dtype=np.float32)).mean() < 2  # the same image, decoded in fp32
