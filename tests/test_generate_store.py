"""``sdcloud generate`` goes through the same job runner and outbox as the server, so a store
configured in the config file or in ``SDCLOUD_STORE`` receives its images (a folder store
here: the same code path as a Drive or volume mount)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _generate(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data_dir), *args, "generate",
                           "a lighthouse", "--steps", "2", "--size", "64x64", "--batch", "2", "--seed", "7"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


@pytest.mark.parametrize("how", ["env", "config"])
def test_generate_uploads_its_images_to_the_configured_store(tmp_path: Path, how: str) -> None:
    store = tmp_path / "drive"
    store.mkdir()
    data = tmp_path / "data"
    if how == "env":
        r = _generate(data, env={"SDCLOUD_STORE": str(store)})
    else:
        config = tmp_path / "sdcloud.toml"
        config.write_text(f"store = {str(store)!r}\n")
        r = _generate(data, "--config", str(config), env={})
    assert r.returncode == 0, r.stderr
    made = [Path(p) for p in r.stdout.split()]
    assert [p.name for p in made] == ["00000-7.png", "00001-8.png"]
    outputs = data / "outputs"
    for path in made:  # in the store under the same key as in the outputs folder, byte for byte
        assert (store / "outputs" / path.relative_to(outputs)).read_bytes() == path.read_bytes()
    assert not any((data / ".sdcloud" / "generate").iterdir())  # the run's own job journal is gone


def test_generate_with_a_bad_store_fails_before_generating(tmp_path: Path) -> None:
    r = _generate(tmp_path / "data", env={"SDCLOUD_STORE": "nosuchscheme://bucket"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("sdcloud: ")
    outputs = tmp_path / "data" / "outputs"
    assert not outputs.exists() or not any(p.is_file() for p in outputs.rglob("*"))
