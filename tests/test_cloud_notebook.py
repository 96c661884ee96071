"""notebooks/colab.ipynb executed headless (nbclient) on this machine with the demo model, up to a
healthy server answering txt2img. Only the Colab-only calls (Drive mount, Colab's port proxy) are
skipped, by the notebook's own ``IN_COLAB`` guard.

The install cell really runs ``pip install``: into a throwaway virtualenv that sees the project
venv's packages (torch included) through a .pth file, from a copy of the source tree, with
``--no-index`` so nothing can be downloaded. That is Colab's situation -- torch already present --
and the cell checks torch is kept.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _throwaway_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The project venv's packages (torch, diffusers, pip, ipykernel...) become visible, but not its
    # editable sdcloud: a plain path line does not run that directory's own .pth hooks.
    Path(site, "_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _source_copy(tmp: Path) -> Path:
    src = tmp / "sdcloud-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    return src


def test_colab_notebook_installs_serves_and_answers_txt2img(tmp_path, monkeypatch, capsys):
    python = _throwaway_venv(tmp_path)
    kernels = tmp_path / "jupyter" / "kernels" / "sdcloud-nb-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "sdcloud notebook test",
                "language": "python",
            }
        )
    )
    port = _free_port()
    data_dir, store = tmp_path / "data", tmp_path / "drive" / "sdcloud"
    for key, value in {
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "SDCLOUD_SOURCE": str(_source_copy(tmp_path)),
        "SDCLOUD_PIP_ARGS": "--no-index --no-build-isolation --disable-pip-version-check",
        "SDCLOUD_PORT": str(port),
        "SDCLOUD_NOTEBOOK_MODEL": "demo",
        "SDCLOUD_NOTEBOOK_DATA_DIR": str(data_dir),
        "SDCLOUD_NOTEBOOK_STORE": str(store),
        "SDCLOUD_NOTEBOOK_AUTH": "tester:notebook-pass",
        "SDCLOUD_NOTEBOOK_START_TIMEOUT": "240",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith(("COLAB_", "SDCLOUD_DATA_DIR", "SDCLOUD_STORE"))]:
        monkeypatch.delenv(key)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="sdcloud-nb-test", timeout=400, resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
            outputs = ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in nb.cells]
            install_out, serve_out = outputs[1], outputs[2]
            with capsys.disabled():
                print("\n[notebook] " + install_out.strip().replace("\n", "\n[notebook] "))
            assert "(kept, not reinstalled)" in install_out
            assert "installed in" in install_out
            assert f"sdcloud is serving at http://127.0.0.1:{port}/" in serve_out
            assert "user: tester" in serve_out
            assert "free tier does not allow" not in serve_out  # this machine is not Colab

            login = "Basic " + base64.b64encode(b"tester:notebook-pass").decode()
            body = json.dumps(
                {
                    "prompt": "a lighthouse at dusk",
                    "steps": 2,
                    "width": 64,
                    "height": 64,
                    "seed": 7,
                    "save_images": True,
                }
            ).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/sdapi/v1/txt2img",
                data=body,
                method="POST",
                headers={"Authorization": login, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=240) as resp:
                answer = json.loads(resp.read())
            assert resp.status == 200
            image = base64.b64decode(answer["images"][0])
            assert image.startswith(b"\x89PNG")
            assert "a lighthouse at dusk" in json.loads(answer["info"])["infotexts"][0]
            # The saved image reaches the Drive stand-in through the outbox.
            deadline = time.monotonic() + 60
            while not list(store.rglob("*.png")) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert list(store.rglob("*.png")), f"no image in the store {store}"
            # Without the login the same server refuses.
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{port}/sdapi/v1/sd-models"), timeout=30
                )
            assert err.value.code == 401
    finally:
        pid_file = data_dir / "serve.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
