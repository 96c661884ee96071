"""``sdcloud serve`` start-up errors are one line that says what to do, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(tmp_path), "serve", "--nowebui", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = serve(tmp_path, "--model", "no-such-model", "--port", str(port))
    assert r.returncode == 1
    assert "sdcloud: checkpoint 'no-such-model' not found" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = serve(tmp_path, "--model", "demo", "--port", str(s.getsockname()[1]))
    assert r.returncode == 1
    assert "pick another --port" in r.stderr and "Traceback" not in r.stderr
