"""``sdcloud plan``, ``doctor`` and ``platform`` as a user runs them: real subprocesses, timed
(the measured times are printed), no torch import, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SDCLOUD = [sys.executable, "-m", "sdcloud.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SDCLOUD_", "COLAB_", "PAPERSPACE_", "RUNPOD_", "VAST_", "KAGGLE_"))
    }
    env.update({"SDCLOUD_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}, **extra)
    return env


def _run(
    args: list[str], env: dict[str, str], tries: int = 1
) -> tuple[subprocess.CompletedProcess[str], float]:
    best = None
    for _ in range(tries):
        t0 = time.perf_counter()
        res = subprocess.run(SDCLOUD + args, capture_output=True, text=True, env=env, timeout=60)
        wall = time.perf_counter() - t0
        best = (res, wall) if best is None or wall < best[1] else best
    return best


@pytest.mark.parametrize(
    "command",
    [["plan", "--images", "3000", "--currency", "JPY", "--budget", "5000"], ["doctor"], ["platform"]],
)
def test_answers_in_under_a_second(tmp_path, capsys, command):
    res, wall = _run(command, _env(tmp_path), tries=3)  # best of three: the CPU is shared
    assert res.returncode in (0, 1), res.stderr
    assert "Traceback" not in res.stderr
    with capsys.disabled():
        print(f"\n[timing] sdcloud {' '.join(command)}: {wall:.3f} s wall (process start to exit)")
    assert wall < 1.0
    if command[0] == "plan":
        assert "planned in" in res.stdout and "¥1,072" in res.stdout
    if command[0] == "doctor":
        assert "doctor finished in" in res.stdout


def test_plan_and_doctor_never_import_torch(tmp_path):
    code = (
        "import sys; from sdcloud.cli import main; "
        "main(['plan', '--images', '10', '--json']); main(['doctor', '--json']); "
        "main(['platform', '--json']); "
        "bad = [m for m in ('torch', 'diffusers', 'gradio', 'fastapi') if m in sys.modules]; "
        "print('HEAVY', bad)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    assert "HEAVY []" in res.stdout, res.stdout[-500:] + res.stderr


def test_plan_json_is_ranked_and_carries_sources(tmp_path):
    res, _ = _run(
        ["plan", "--images", "1000", "--model", "sdxl", "--json", "--storage-gb", "50"], _env(tmp_path)
    )
    out = json.loads(res.stdout)
    assert out["workload"]["width"] == 1024 and out["workload"]["steps"] == 30
    fitting = [r["total"] for r in out["rows"] if r["fits"] and r["total"] is not None]
    assert fitting == sorted(fitting)
    assert all(r["source"] for r in out["rows"])
    assert out["elapsed_s"] < 1.0


def test_user_catalog_in_data_dir_is_merged(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/catalog.json").write_text(
        json.dumps(
            {
                "offers": [
                    {
                        "id": "home",
                        "provider": "home",
                        "plan": "Desk",
                        "billing": "hourly",
                        "gpus": {"RTX 3090": {"price": {"USD": 0.05}}},
                        "source": "electricity bill",
                        "date": "2026-11",
                    }
                ]
            }
        )
    )
    res, _ = _run(["plan", "--train-hours", "100", "--provider", "home", "--json"], _env(tmp_path))
    (row,) = json.loads(res.stdout)["rows"]
    assert row["total"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--currency", "EUR"], "unknown currency 'EUR'"),
        (["plan", "--provider", "lambda"], "unknown provider 'lambda'"),
        (["plan", "--gpu", "H900"], "unknown GPU 'H900'"),
        (["plan", "--images", "-5"], "--images must be between 0"),
        (["plan", "--train-hours", "nan"], "--train-hours must be a finite number"),
        (["plan", "--size", "huge"], "--size must look like 512x512"),
        (["plan", "--model", "flux"], "unknown model family 'flux'"),
        (["plan", "--jpy-per-usd", "0"], "--jpy-per-usd must be a positive number"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(tmp_path, args, message):
    res = subprocess.run(SDCLOUD + args, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith("sdcloud: ") and message in res.stderr
    assert "Traceback" not in res.stderr


def test_malformed_catalog_file_from_env(tmp_path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"offers": [{"id": "colab-pro", "included_cu": "lots"}]}')
    res = subprocess.run(
        SDCLOUD + ["plan"],
        capture_output=True,
        text=True,
        env=_env(tmp_path, SDCLOUD_CATALOG=str(bad)),
        timeout=60,
    )
    assert res.returncode == 1
    assert (
        "prices.json" in res.stderr
        and "offers[colab-pro].included_cu must be a number >= 0, got 'lots'" in res.stderr
    )


def test_platform_on_a_faked_paperspace(tmp_path):
    env = _env(tmp_path, PAPERSPACE_FQDN="n1.paperspacegradient.com")
    res = subprocess.run(
        SDCLOUD + ["platform", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    out = json.loads(res.stdout)
    assert out["platform"]["id"] == "paperspace"
    assert out["public_url"] == {
        "method": "paperspace-6006",
        "url": "https://tensorboard-n1.paperspacegradient.com",
        "port": 6006,
        "notes": [],
    }
