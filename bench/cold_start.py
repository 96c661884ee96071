"""A new session, from a fresh virtualenv to the first image, with a cold and a warm store.

    python bench/cold_start.py               # demo-size checkpoint
    python bench/cold_start.py --json out.json

Each run is a new machine as far as sdcloud can tell: a fresh virtualenv (sdcloud installed
into it with pip; torch and the other libraries are reused from this environment through a
.pth file, as Colab reuses its own torch), a new empty data folder and an empty local model
cache. The checkpoint sits in a "Drive" folder (``SDCLOUD_CKPT_DIR``) and is copied to local
disk (``SDCLOUD_MODEL_COPY=always``: this machine has no FUSE mount to detect).

* **cold**: the store is empty. After the first image the session is pushed to it
  (``sdcloud storage push``: settings, hashes, torch.compile cache).
* **warm**: a second new machine with that store: settings and the checkpoint's hashes come
  back from it, so the model is not read again just to hash it.

Printed: each phase (install, then ``serve``'s own timeline from ``/api/session``), cold and
warm, and the ratio warm/cold. Honest limits: the demo checkpoint is tiny, so hashing and
copying cost little here; on a 2-7 GB checkpoint over Drive they are the big phases. The
figures go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("install", "install_check", "imports", "store_restore", "model_fetch", "model_load", "first_image")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_venv(where: Path) -> tuple[Path, float]:
    """A new virtualenv with sdcloud pip-installed (no index: nothing is downloaded)."""
    t0 = time.perf_counter()
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_reuse_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    src = where / "sdcloud-src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "test-artifacts", "__pycache__",
                                                            "*.egg-info", "build"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    str(src)], check=True, capture_output=True)
    return python, time.perf_counter() - t0


def session(python: Path, work: Path, store: Path, drive: Path) -> dict[str, float]:
    """One new machine: serve, wait until ready, make one image, read the timeline; push the
    session to the store; stop."""
    data = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCLOUD_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", SDCLOUD_DATA_DIR=str(data), SDCLOUD_STORE=str(store),
               SDCLOUD_CKPT_DIR=str(drive), SDCLOUD_MODEL_COPY="always",
               SDCLOUD_LOCAL_CACHE_DIR=str(work / "local-cache"))
    port = _free_port()
    log = open(work / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(python), "-m", "sdcloud", "serve", "--model", "bench15", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError((work / "serve.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(base + "/api/session", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("serve did not start")
            time.sleep(0.05)
        body = json.dumps({"prompt": "a cat", "width": 64, "height": 64, "steps": 4, "save_images": True}).encode()
        req = urllib.request.Request(base + "/sdapi/v1/txt2img", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
        while True:
            with urllib.request.urlopen(base + "/api/session", timeout=5) as r:
                startup = json.loads(r.read())["startup"]
            if startup["first_image_s"] is not None:
                break
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    subprocess.run([str(python), "-m", "sdcloud", "storage", "push"], env=env, check=True, capture_output=True)
    out = {p["name"]: p["seconds"] for p in startup["phases"]}
    out["ready_s"] = startup["ready_s"]
    out["first_image_s"] = startup["first_image_s"]
    out["restore"] = next((p["detail"] for p in startup["phases"] if p["name"] == "store_restore"), "")
    out["fetch"] = next((p["detail"] for p in startup["phases"] if p["name"] == "model_fetch"), "")
    return out


def run_once(label: str, store: Path, drive: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"sdcloud-{label}-") as tmp:
        work = Path(tmp)
        python, install_s = fresh_venv(work)
        result = session(python, work, store, drive)
        result["install"] = round(install_s, 3)
        result["total_s"] = round(install_s + result["first_image_s"], 3)
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from sdcloud.engine.demo import write_demo_checkpoint

    with tempfile.TemporaryDirectory(prefix="sdcloud-bench-") as tmp:
        drive, store = Path(tmp) / "drive" / "models", Path(tmp) / "store"
        drive.mkdir(parents=True)
        store.mkdir()
        write_demo_checkpoint(drive / "bench15.safetensors", "sd15")
        size_mb = (drive / "bench15.safetensors").stat().st_size / 1e6
        cold = run_once("cold", store, drive)
        warm = run_once("warm", store, drive)
    print(f"fresh venv -> first image, checkpoint {size_mb:.1f} MB on a 'Drive' folder, this machine "
          f"({os.cpu_count()} CPUs)")
    print(f"{'phase':<16}{'cold s':>10}{'warm s':>10}{'warm/cold':>11}")
    for name in (*PHASES, "total_s"):
        c, w = cold.get(name), warm.get(name)
        if c is None or w is None:
            continue
        ratio = f"{w / c:.2f}" if c else "-"
        print(f"{name:<16}{c:>10.2f}{w:>10.2f}{ratio:>11}")
    print(f"store restore: cold '{cold['restore']}'; warm '{warm['restore']}'")
    print(f"model fetch: cold '{cold['fetch']}'; warm '{warm['fetch']}'")
    print(f"ratio warm/cold, fresh venv to first image: {warm['total_s'] / cold['total_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cold": cold, "warm": warm}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
