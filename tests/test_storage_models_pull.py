"""``models pull`` against a local HTTP server on 127.0.0.1 that plays Civitai, the Hub and a
plain web host: a small real .safetensors, an HTML/JSON error page, a download that breaks
half-way and resumes, published SHA-256s right and wrong."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from safetensors.numpy import save

from sdcloud.errors import BadRequest, CorruptFile, NotFound, StoreError
from sdcloud.settings import Settings
from sdcloud.storage.model_pull import pull, resolve
from sdcloud.storage.model_sources import load_sources

CKPT = save({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((8, 4, 3, 3), np.float32),
             "cond_stage_model.transformer.text_model.final_layer_norm.weight": np.ones(64, np.float32),
             "model.diffusion_model.out.2.weight": np.zeros(100_000, np.float32)})  # ~400 kB
LORA = save({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 64), np.float32),
             "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": np.zeros((64, 4), np.float32)})
SHA_CKPT = hashlib.sha256(CKPT).hexdigest()
SHA_LORA = hashlib.sha256(LORA).hexdigest()
HTML = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>captcha</body></html>"


class Handler(BaseHTTPRequestHandler):
    flaky_done: set[str] = set()
    seen_auth: dict[str, str | None] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code, body=b"", ctype="application/octet-stream", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _file(self, data: bytes, extra=None, cut_at: int | None = None):
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if cut_at is not None:
            self.wfile.write(body[:cut_at])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?")[0]
        Handler.seen_auth[path] = self.headers.get("Authorization")
        if path == "/files/model.safetensors":
            return self._file(CKPT)
        if path == "/files/flaky.safetensors":
            if path not in Handler.flaky_done:
                Handler.flaky_done.add(path)
                return self._file(CKPT, cut_at=len(CKPT) // 2)
            return self._file(CKPT)
        if path == "/files/page.safetensors":
            return self._send(200, HTML, "text/html; charset=utf-8")
        if path == "/files/tiny.ckpt":
            return self._send(200, b"PK\x03\x04 nope")
        if path == "/files/fake.safetensors":  # octet-stream but not a model
            return self._send(200, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"0" * 2000)
        if path == "/api/v1/model-versions/123":
            return self._send(200, json.dumps({
                "id": 123, "model": {"name": "Cute", "type": "LORA"},
                "files": [{"name": "cute.safetensors", "primary": True, "type": "Model",
                           "hashes": {"SHA256": SHA_LORA.upper()},
                           "downloadUrl": f"{self.server.base}/api/download/models/123"}]}).encode(),
                "application/json")
        if path == "/api/v1/model-versions/124":
            return self._send(200, json.dumps({
                "id": 124, "model": {"name": "Bad", "type": "Checkpoint"},
                "files": [{"name": "bad.safetensors", "primary": True, "type": "Model",
                           "hashes": {"SHA256": "AB" * 32},
                           "downloadUrl": f"{self.server.base}/api/download/models/124"}]}).encode(),
                "application/json")
        if path == "/api/v1/model-versions/125":
            return self._send(200, json.dumps({
                "id": 125, "model": {"name": "Gated", "type": "Checkpoint"},
                "files": [{"name": "gated.safetensors", "primary": True, "type": "Model",
                           "downloadUrl": f"{self.server.base}/api/download/models/125"}]}).encode(),
                "application/json")
        if path == "/api/download/models/123":
            return self._file(LORA, {"Content-Disposition": 'attachment; filename="cute.safetensors"'})
        if path == "/api/download/models/124":
            return self._file(CKPT)
        if path == "/api/download/models/125":
            if self.headers.get("Authorization") != "Bearer civ-secret":
                return self._send(401, json.dumps({"error": "Unauthorized: log in to download"}).encode(),
                                  "application/json")
            return self._file(CKPT)
        if path == "/alice/sd/resolve/main/model.safetensors":
            self.send_response(302)
            self.send_header("Location", "/cdn/blob")
            self.send_header("X-Linked-Etag", f'"{SHA_CKPT}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path == "/cdn/blob":
            return self._file(CKPT)
        return self._send(404, b'{"error":"not found"}', "application/json")


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.base
    srv.shutdown()


@pytest.fixture
def env(server, monkeypatch, tmp_path):
    monkeypatch.setenv("SDCLOUD_CIVITAI_ENDPOINT", server)
    monkeypatch.setenv("HF_ENDPOINT", server)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # only our loopback server is contacted
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    s = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    s.ensure_dirs()
    return s


def test_plain_url_lands_in_checkpoints_with_source_recorded(server, env):
    dest = pull(f"{server}/files/model.safetensors", env, progress=False)
    assert dest == env.checkpoints_path / "model.safetensors"
    assert dest.read_bytes() == CKPT
    assert load_sources(env.state_path)["checkpoint/model.safetensors"]["sha256"] == SHA_CKPT
    assert not list((env.models_root / ".downloads").iterdir())


def test_civitai_version_goes_to_lora_folder_and_checks_sha(server, env):
    dest = pull("civitai:123", env, progress=False)
    assert dest == env.lora_path / "cute.safetensors"
    assert dest.read_bytes() == LORA
    assert Handler.seen_auth["/api/download/models/123"] is None  # no token set, none sent


def test_civitai_page_url_with_version(server, env):
    dest = pull(f"{server}/models/99/cute-style?modelVersionId=123", env, progress=False)
    assert dest.name == "cute.safetensors"


def test_sha_mismatch_is_refused_and_nothing_kept(server, env):
    with pytest.raises(CorruptFile, match="does not match the published"):
        pull("civitai:124", env, progress=False)
    assert not (env.checkpoints_path / "bad.safetensors").exists()
    assert not list((env.models_root / ".downloads").iterdir())


def test_civitai_login_error_json_is_refused_with_a_hint(server, env, monkeypatch):
    with pytest.raises(BadRequest) as err:
        pull("civitai:125", env, progress=False)
    assert "not a model" in str(err.value) and "Unauthorized" in str(err.value)
    assert "CIVITAI_TOKEN" in str(err.value)
    assert not any(env.checkpoints_path.iterdir())
    monkeypatch.setenv("CIVITAI_TOKEN", "civ-secret")
    dest = pull("civitai:125", env, progress=False)
    assert dest.read_bytes() == CKPT


def test_html_page_and_non_models_are_refused(server, env):
    with pytest.raises(BadRequest, match="text/html page, not a model: Just a moment"):
        pull(f"{server}/files/page.safetensors", env, progress=False)
    with pytest.raises(BadRequest, match="too small to be a model"):
        pull(f"{server}/files/tiny.ckpt", env, progress=False)
    with pytest.raises(CorruptFile, match="not a valid safetensors"):
        pull(f"{server}/files/fake.safetensors", env, progress=False)
    with pytest.raises(NotFound):
        pull(f"{server}/files/missing.safetensors", env, progress=False)
    assert not any(env.checkpoints_path.iterdir())


def test_broken_download_resumes_where_it_stopped(server, env):
    url = f"{server}/files/flaky.safetensors"
    with pytest.raises(StoreError, match="run the same command again to resume"):
        pull(url, env, progress=False)
    parts = list((env.models_root / ".downloads").iterdir())
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(CKPT)
    dest = pull(url, env, progress=False)
    assert dest.read_bytes() == CKPT
    assert load_sources(env.state_path)["checkpoint/flaky.safetensors"]["sha256"] == SHA_CKPT


def test_hub_file_uses_linked_etag_and_token_only_for_the_hub(server, env):
    dest = pull("hf://alice/sd/model.safetensors", env, progress=False)
    assert dest.read_bytes() == CKPT
    assert Handler.seen_auth["/alice/sd/resolve/main/model.safetensors"] == "Bearer hf-secret"


def test_existing_file_is_never_overwritten(server, env):
    (env.checkpoints_path / "model.safetensors").write_bytes(b"mine")
    with pytest.raises(BadRequest, match="already exists"):
        pull(f"{server}/files/model.safetensors", env, progress=False)
    assert (env.checkpoints_path / "model.safetensors").read_bytes() == b"mine"


@pytest.mark.parametrize("spec", ["ftp://host/x.safetensors", "just-a-word", "civitai:abc"])
def test_unknown_sources_are_one_clear_line(spec):
    with pytest.raises(BadRequest):
        resolve(spec, session=None)


def test_token_never_in_messages(server, env, monkeypatch):
    monkeypatch.setenv("CIVITAI_TOKEN", "wrong-secret")
    with pytest.raises(BadRequest) as err:
        pull(f"{server}/api/download/models/125?token=wrong-secret", env, progress=False)
    assert "secret" not in str(err.value)
