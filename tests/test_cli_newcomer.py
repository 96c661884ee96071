"""Small things a newcomer trips on: ``python -m sdcloud``, global options after the command,
and a clean install (no setuptools deprecation warning, SPDX licence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCLOUD_")}
    env.update({"HF_HUB_OFFLINE": "1", "LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": ""}, **extra)
    return env


def _sdcloud(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdcloud", *args], capture_output=True, text=True,
                          env=_env(**env), timeout=60)


def test_python_dash_m_sdcloud_runs_the_cli():
    res = _sdcloud("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("sdcloud ")
    res = _sdcloud("--help")
    assert res.returncode == 0 and "serve" in res.stdout and "plan" in res.stdout


def _user_catalog(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "catalog.json").write_text(json.dumps({"offers": [{
        "id": "my-box", "provider": "mybox", "plan": "Home", "billing": "hourly",
        "gpus": {"RTX 3090": {"price": {"USD": 0.01}}}, "storage": None,
        "date": "2026-12-01", "source": "my electricity bill"}]}))


@pytest.mark.parametrize("where", ["before", "after"])
def test_data_dir_is_accepted_before_and_after_the_command(tmp_path, where):
    data = tmp_path / "data"
    _user_catalog(data)
    plan = ["plan", "--images", "10", "--json"]
    args = ["--data-dir", str(data), *plan] if where == "before" else [*plan, "--data-dir", str(data)]
    res = _sdcloud(*args)
    assert res.returncode == 0, res.stderr
    assert "mybox" in {r["provider"] for r in json.loads(res.stdout)["rows"]}


def test_option_given_before_is_not_reset_by_the_command(tmp_path):
    data = tmp_path / "data"
    _user_catalog(data)
    res = _sdcloud("--data-dir", str(data), "plan", "--images", "10", "--json", "--provider", "mybox")
    assert res.returncode == 0, res.stderr


def test_nested_action_takes_global_options_too(tmp_path):
    res = _sdcloud("storage", "status", "--data-dir", str(tmp_path / "d"))
    assert "unrecognized arguments" not in res.stderr
    assert "Traceback" not in res.stderr


def test_package_metadata_has_spdx_license_and_no_deprecation_warning(tmp_path):
    """What ``pip install`` runs first; setuptools warns on the old ``license = {text=...}`` table."""
    code = ("import setuptools.build_meta as b, sys; "
            f"print(b.prepare_metadata_for_build_wheel({str(tmp_path)!r}))")
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr
    assert "deprecat" not in (res.stdout + res.stderr).lower(), res.stderr
    meta = (tmp_path / res.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in meta
