"""``serve --public`` on a (faked) RunPod pod: the platform's own proxy URL is printed with the
generated credentials, and the server refuses requests without them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import launch

pytestmark = pytest.mark.slow  # a real server


def test_public_url_uses_the_platform_proxy_and_forces_auth(tmp_path: Path) -> None:
    server = launch(tmp_path / "data", "--public", env={"RUNPOD_POD_ID": "abc123"})
    try:
        deadline = time.monotonic() + 30
        while "Public URL" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.log()
        assert f"Public URL (runpod-proxy): https://abc123-{server.port}.proxy.runpod.net" in log
        password = log.split("with password: ")[1].split()[0]
        assert f"user: sdcloud  password: {password}" in log
        assert httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30).status_code == 401
        ok = httpx.get(server.url + "/sdapi/v1/sd-models", auth=("sdcloud", password), timeout=30)
        assert ok.status_code == 200
    finally:
        server.stop()
