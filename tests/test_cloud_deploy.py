"""The deploy recipes: the systemd unit passes ``systemd-analyze verify``, and every SDCLOUD_*
variable the Dockerfile and the env file set is a real setting (a typo would be silently ignored).
The Docker image itself cannot be built here (no daemon, no registry access)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdcloud.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "sdcloud.service").read_text()
    # Point it at this checkout's sdcloud and an existing user so verify can check them.
    sdcloud = Path(sys.executable).with_name("sdcloud")
    unit = unit.replace("/opt/sdcloud/venv/bin/sdcloud", str(sdcloud))
    unit = unit.replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/")
    unit = re.sub(r"^(User|Group)=sdcloud$", r"\1=root", unit, flags=re.M)
    (tmp_path / "sdcloud.service").write_text(unit)
    res = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "sdcloud.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "sdcloud.service" not in res.stderr, res.stderr


def test_deploy_files_only_set_real_settings():
    fields = {f.name for f in dataclasses.fields(Settings)}
    names = set()
    for name in ("Dockerfile", "sdcloud.env"):
        names |= set(re.findall(r"\bSDCLOUD_([A-Z_]+)=", (DEPLOY / name).read_text()))
    assert names >= {"DATA_DIR", "HOST", "PORT", "AUTH"}
    assert {n.lower() for n in names} <= fields
    env = {
        f"SDCLOUD_{k}": v
        for k, v in re.findall(r"^SDCLOUD_([A-Z_]+)=(.*)$", (DEPLOY / "sdcloud.env").read_text(), flags=re.M)
    }
    settings = Settings.load(env=env)
    assert settings.host == "0.0.0.0" and settings.auth  # listening beyond localhost only with a login

