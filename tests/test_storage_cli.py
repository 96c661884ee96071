"""``sdcloud storage ...`` and ``sdcloud models pull`` as a user runs them: session push/pull
through a folder store and a loopback HTTP server, one-line errors, persistence warnings."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from safetensors.numpy import save

from sdcloud.cli import main
from sdcloud.settings import Settings
from sdcloud.storage.health import persistence_warnings
from sdcloud.storage.local import LocalStore
from sdcloud.storage.outbox import Outbox

CKPT = save({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((8, 4, 3, 3), np.float32),
             "model.diffusion_model.out.2.weight": np.zeros(4096, np.float32)})
LORA = save({"lora_unet_x.lora_down.weight": np.zeros((4, 64), np.float32)})


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "web"
    root.mkdir()
    (root / "base.safetensors").write_bytes(CKPT)
    (root / "error.safetensors").write_text("<html><title>Error 500</title></html>")
    handler = functools.partial(QuietHandler, directory=str(root))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_session_push_then_pull_on_a_fresh_machine(tmp_path, web, capsys, monkeypatch):
    monkeypatch.delenv("SDCLOUD_STORE", raising=False)
    old, new, store = tmp_path / "old", tmp_path / "new", tmp_path / "drive"
    store.mkdir()
    code, out, _ = run(capsys, "--data-dir", old, "models", "pull", f"{web}/base.safetensors")
    assert code == 0 and "saved" in out
    s = Settings.load({"data_dir": str(old)}, env={})
    (s.lora_path / "style.safetensors").write_bytes(LORA)
    s.embeddings_path.mkdir(parents=True, exist_ok=True)
    (s.embeddings_path / "neg.pt").write_bytes(b"PK\x03\x04 embedding")
    (s.data_dir / "styles.csv").write_text("name,prompt\ncine,cinematic {prompt}\n")
    code, out, _ = run(capsys, "--data-dir", old, "storage", "push", "--store", store / "sd")
    assert code == 0 and "1 checkpoint(s) listed" in out
    # a fresh machine: small files come back, the checkpoint is re-fetched from its source URL
    code, out, err = run(capsys, "--data-dir", new, "storage", "pull", "--store", store / "sd")
    assert code == 0, err
    n = Settings.load({"data_dir": str(new)}, env={})
    assert (n.lora_path / "style.safetensors").read_bytes() == LORA
    assert (n.embeddings_path / "neg.pt").exists()
    assert (n.data_dir / "styles.csv").read_text().startswith("name,prompt")
    assert (n.checkpoints_path / "base.safetensors").read_bytes() == CKPT
    assert "1 checkpoint(s) fetched" in out
    # local edits win over the store unless --force
    (n.data_dir / "styles.csv").write_text("mine")
    run(capsys, "--data-dir", new, "storage", "pull", "--store", store / "sd", "--checkpoints", "none")
    assert (n.data_dir / "styles.csv").read_text() == "mine"
    run(capsys, "--data-dir", new, "storage", "pull", "--store", store / "sd", "--force",
        "--checkpoints", "none")
    assert (n.data_dir / "styles.csv").read_text().startswith("name,prompt")


def test_checkpoints_from_the_store_when_pushed_with_them(tmp_path, capsys):
    old, new, store = tmp_path / "old", tmp_path / "new", tmp_path / "vol"
    store.mkdir()
    s = Settings.load({"data_dir": str(old)}, env={})
    s.ensure_dirs()
    (s.checkpoints_path / "merge.safetensors").write_bytes(CKPT)  # made here, no source URL
    run(capsys, "--data-dir", old, "storage", "push", "--store", store)
    code, _, err = run(capsys, "--data-dir", new, "storage", "pull", "--store", store)
    assert code == 0 and "not fetched: merge.safetensors" in err
    run(capsys, "--data-dir", old, "storage", "push", "--store", store, "--checkpoints")
    code, out, _ = run(capsys, "--data-dir", new, "storage", "pull", "--store", store,
                       "--checkpoints", "store")
    assert code == 0 and "1 checkpoint(s) fetched" in out
    assert (new / "models" / "Stable-diffusion" / "merge.safetensors").read_bytes() == CKPT


def test_status_reports_queue_and_problems_in_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    s = Settings.load({"data_dir": str(data)}, env={})
    s.ensure_dirs()
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    box = Outbox(s, LocalStore(store_dir))
    img = s.outputs_path / "a.png"
    img.write_bytes(b"png")
    box.add(img, "a prompt")
    box.close()
    code, out, _ = run(capsys, "--data-dir", data, "storage", "status", "--store", store_dir, "--json")
    st = json.loads(out)
    assert code == 0 and st["pending"] == 2 and st["healthy"] is True
    code, out, _ = run(capsys, "--data-dir", data, "storage", "drain", "--store", store_dir)
    assert code == 0 and "uploaded 2 file(s)" in out
    assert (store_dir / "outputs" / "a.png").exists()
    # the Drive is not mounted: the folder's parent is missing
    code, out, _ = run(capsys, "--data-dir", data, "storage", "status", "--store",
                       tmp_path / "drive" / "MyDrive" / "sd")
    assert code == 1 and "is the drive or volume mounted" in out


@pytest.mark.parametrize("argv, words", [
    (["storage", "status", "--store", "gs://bucket"], "unknown store scheme"),
    (["storage", "push"], "no store set"),
    (["models", "pull", "ftp://x/y.safetensors"], "cannot pull"),
])
def test_bad_input_is_one_line_no_traceback(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.delenv("SDCLOUD_STORE", raising=False)
    code, _, err = run(capsys, "--data-dir", tmp_path, *argv)
    assert code == 1
    assert err.startswith("sdcloud: ") and words in err and err.count("\n") == 1


def test_models_pull_refuses_an_error_page(tmp_path, web, capsys):
    code, _, err = run(capsys, "--data-dir", tmp_path, "models", "pull", f"{web}/error.safetensors")
    assert code == 1 and "too small to be a model" in err and err.count("\n") == 1
    assert not list((tmp_path / "models" / "Stable-diffusion").iterdir())


def test_persistence_warnings_on_colab(tmp_path):
    root = tmp_path
    (root / "content" / "drive" / "MyDrive").mkdir(parents=True)
    env = {"COLAB_GPU": "1"}
    local_out = Settings.load({"data_dir": str(root / "content" / "sd")}, env={})
    [w] = persistence_warnings(local_out, env=env, root=root)
    assert "ephemeral disk and no store" in w and "/content/drive/MyDrive/sdcloud" in w
    on_drive = local_out.replace(store=str(root / "content" / "drive" / "MyDrive" / "sd"))
    assert persistence_warnings(on_drive, env=env, root=root) == []
    wrong = local_out.replace(store=str(root / "content" / "sd-store"))
    [w] = persistence_warnings(wrong, env=env, root=root)
    assert "vanishes with the machine" in w
    assert persistence_warnings(local_out.replace(store="hf://alice/out"), env=env, root=root) == []
