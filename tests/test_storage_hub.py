"""The Hugging Face Hub store and ``models push``.

No Hub is reachable here, so huggingface_hub talks to a small fake Hub on 127.0.0.1 that
answers with responses recorded from the real API (whoami-v2 for write, read and fine-grained
tokens; repo info/create; preupload; NDJSON commits). The >5 GB path uses a sparse file and
replaces only the chunked xet upload itself (which needs the Hub's storage backend) with a
recorder."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

import pytest

from sdcloud.errors import StoreError
from sdcloud.settings import Settings
from sdcloud.storage.hf import HubStore, shard_key
from sdcloud.storage.model_push import LARGE_FILE, push_model
from sdcloud.storage.outbox import Outbox

WHOAMI = {
    "hf_write": {"type": "user", "name": "alice", "orgs": [{"name": "studio"}],
                 "auth": {"type": "access_token", "accessToken": {"displayName": "w", "role": "write"}}},
    "hf_read": {"type": "user", "name": "alice", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "r", "role": "read"}}},
    "hf_fine_other": {"type": "user", "name": "alice", "orgs": [],
                      "auth": {"type": "access_token", "accessToken": {
                          "displayName": "f", "role": "fineGrained",
                          "fineGrained": {"global": [], "scoped": [
                              {"entity": {"type": "model", "name": "alice/other"},
                               "permissions": ["repo.content.read", "repo.write"]}]}}}},
}


class FakeHub(BaseHTTPRequestHandler):
    repos: dict[str, dict[str, bytes]] = {}
    commits: list[tuple[str, int]] = []

    def log_message(self, *args):
        pass

    def _json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _token(self):
        return (self.headers.get("Authorization") or "").removeprefix("Bearer ")

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _entry(self, name, data):
        return {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}

    def _resolve(self, head: bool):
        m = re.match(r"^/(datasets/)?([^/]+/[^/]+)/resolve/main/(.+)$", unquote(self.path.split("?")[0]))
        files = FakeHub.repos.get(f"{'datasets' if m and m[1] else 'models'}:{m[2]}", {}) if m else {}
        if not m or m[3] not in files:
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = files[m[3]]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "1" * 40)
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return None

    def do_HEAD(self):  # noqa: N802
        return self._resolve(head=True)

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if "/resolve/" in path:
            return self._resolve(head=False)
        m = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/tree/main(/.*)?$", path)
        if m:
            files = FakeHub.repos.get(f"{m[1]}:{m[2]}", {})
            return self._json(200, [self._entry(n, d) for n, d in sorted(files.items())])
        if path == "/api/whoami-v2":
            who = WHOAMI.get(self._token())
            return self._json(200, who) if who else self._json(401, {"error": "Invalid credentials"})
        m = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)(/revision/main)?$", path)
        if m:
            key = f"{m[1]}:{m[2]}"
            if key not in FakeHub.repos:
                return self._json(404, {"error": "Repository not found"},
                                  {"X-Error-Code": "RepoNotFound"})
            return self._json(200, {"id": m[2], "private": True, "sha": "0" * 40, "siblings": [
                {"rfilename": f} for f in FakeHub.repos[key]]})
        return self._json(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        path = self.path.split("?")[0]
        body = self._body()
        if path == "/api/repos/create":
            req = json.loads(body)
            if self._token() not in ("hf_write",):
                return self._json(403, {"error": "You don't have the rights to create this repo"})
            kind = (req.get("type") or "model") + "s"
            name = f"{req.get('organization') or 'alice'}/{req['name']}"
            FakeHub.repos.setdefault(f"{kind}:{name}", {})
            return self._json(200, {"url": f"http://{self.headers['Host']}/{name}", "name": name})
        m = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/paths-info/main$", path)
        if m:
            files = FakeHub.repos.get(f"{m[1]}:{m[2]}", {})
            wanted = parse_qs(body.decode()).get("paths", [])
            return self._json(200, [self._entry(n, files[n]) for n in wanted if n in files])
        m = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/preupload/main$", path)
        if m:
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                               "shouldIgnore": False} for f in files]})
        m = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/commit/main$", path)
        if m:
            if self._token() != "hf_write":  # what the Hub does to a read-only token
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            key = f"{m[1]}:{m[2]}"
            n = 0
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    FakeHub.repos[key][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    n += 1
            FakeHub.commits.append((key, n))
            return self._json(200, {"success": True, "commitOid": "1" * 40,
                                    "commitUrl": f"http://{self.headers['Host']}/{m[2]}/commit/{'1' * 40}"})
        return self._json(404, {"error": "not found"})


@pytest.fixture(scope="module")
def hub():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub honours HF_HUB_OFFLINE (set for the test suite); only the loopback fake
    Hub is contacted here."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    FakeHub.repos.clear()
    FakeHub.commits.clear()


def api_for(hub, token):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub, token=token)


def test_no_token_says_how_to_log_in(hub, online, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login either
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(StoreError, match="hf auth login"):
        push_model(f, "hf://alice/models", staging_root=tmp_path, api=api_for(hub, None))


def test_read_only_token_is_named_not_reported_as_404(hub, online, tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(StoreError) as err:
        push_model(f, "hf://alice/models", staging_root=tmp_path, api=api_for(hub, "hf_read"))
    assert "read-only" in str(err.value) and "create a write token" in str(err.value)
    assert "hf_read" not in str(err.value)
    assert FakeHub.commits == []


def test_the_raw_404_trap_still_reads_as_a_token_problem(hub, online, tmp_path):
    """If a read-only token gets past whoami (e.g. a stale cache), the commit's 404 must still
    mention the token, not only 'repo not found'."""
    FakeHub.repos["models:alice/models"] = {}
    store = HubStore("alice/models", endpoint=hub, token="hf_read")
    f = tmp_path / "a.png"
    f.write_bytes(b"png")
    with pytest.raises(StoreError, match="read-only token"):
        store.put(f, "outputs/a.png")


def test_fine_grained_token_without_write_on_the_repo(hub, online, tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(StoreError, match="fine-grained .* cannot write to alice/models"):
        push_model(f, "hf://alice/models", staging_root=tmp_path, api=api_for(hub, "hf_fine_other"))


def test_invalid_token_and_foreign_namespace(hub, online, tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(StoreError, match="invalid or expired"):
        push_model(f, "hf://alice/models", staging_root=tmp_path, api=api_for(hub, "hf_bogus"))
    with pytest.raises(StoreError, match="cannot write to 'bob/"):
        push_model(f, "hf://bob/models", staging_root=tmp_path, api=api_for(hub, "hf_write"))


def test_small_push_creates_private_repo_and_commits_the_file(hub, online, tmp_path):
    f = tmp_path / "merge.safetensors"
    f.write_bytes(b"y" * 3000)
    where = push_model(f, "hf://alice/models/sdxl", staging_root=tmp_path, api=api_for(hub, "hf_write"))
    assert where == "hf://alice/models/sdxl/merge.safetensors"
    assert FakeHub.repos["models:alice/models"]["sdxl/merge.safetensors"] == b"y" * 3000


def test_over_5gb_goes_through_the_resumable_folder_path(hub, online, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    big = tmp_path / "sdxl-merge.safetensors"
    with open(big, "wb") as fh:  # sparse: 6.9 GB apparent size, no blocks written
        fh.truncate(6_900_000_000)
    assert big.stat().st_size > LARGE_FILE
    seen = []

    def record_folder(self, *, repo_id, folder_path, repo_type=None, **kw):
        from pathlib import Path

        files = [(p.relative_to(folder_path).as_posix(), p.stat().st_size)
                 for p in Path(folder_path).rglob("*") if p.is_file()]
        seen.append((repo_id, repo_type, sorted(files)))

    def no_single_upload(self, **kw):
        raise AssertionError("a >5 GB file must not take the single-request path")

    monkeypatch.setattr(HfApi, "upload_folder", record_folder)
    monkeypatch.setattr(HfApi, "upload_large_folder", record_folder, raising=False)
    monkeypatch.setattr(HfApi, "upload_file", no_single_upload)
    where = push_model(big, "hf://alice/big", staging_root=tmp_path / "stage", api=api_for(hub, "hf_write"))
    assert where == "hf://alice/big/sdxl-merge.safetensors"
    assert seen == [("alice/big", "model", [("sdxl-merge.safetensors", 6_900_000_000)])]
    # a second run (resume) reuses the same staged folder instead of copying 6.9 GB
    push_model(big, "hf://alice/big", staging_root=tmp_path / "stage", api=api_for(hub, "hf_write"))
    assert len(list((tmp_path / "stage").iterdir())) == 1
    assert big.stat().st_blocks * 512 < 1_000_000  # nothing ever wrote the 6.9 GB


def test_outbox_batches_images_into_one_commit_per_batch(hub, online, tmp_path):
    s = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    s.ensure_dirs()
    store = HubStore("alice/outputs", repo_type="dataset", endpoint=hub, token="hf_write")
    store.check()  # creates the private dataset repo
    assert "datasets:alice/outputs" in FakeHub.repos
    box = Outbox(s, store, backoff=(0.05, 0.3))
    folder = s.outputs_path / "txt2img-images" / "2026-11-27"
    folder.mkdir(parents=True)
    for i in range(10):
        p = folder / f"{i + 5000:05d}-3.png"
        p.write_bytes(b"img%d" % i)
        box.add(p, f"prompt {i}")
    box.start()
    assert box.wait_idle(20)
    box.close()
    files = FakeHub.repos["datasets:alice/outputs"]
    assert len(files) == 20
    assert "outputs/txt2img-images/2026-11-27/001/05000-3.png" in files
    assert FakeHub.commits == [("datasets:alice/outputs", 20)]


def test_shard_key_keeps_folders_under_the_hub_limit():
    assert shard_key("outputs/txt2img-images/2026-11-27/12345-7.png") == \
        "outputs/txt2img-images/2026-11-27/002/12345-7.png"
    assert shard_key("session/Lora/x.safetensors") == "session/Lora/x.safetensors"


def test_session_push_and_pull_through_the_hub(hub, online, tmp_path):
    from sdcloud.storage.sync import pull_session, push_session

    old = Settings.load({"data_dir": str(tmp_path / "old")}, env={})
    old.ensure_dirs()
    (old.lora_path / "style.safetensors").write_bytes(b"lora" * 500)
    (old.data_dir / "styles.csv").write_text("name,prompt\n")
    store = HubStore("alice/session", repo_type="dataset", endpoint=hub, token="hf_write")
    store.check()
    result = push_session(old, store, report=lambda _: None)
    assert result["uploaded"] == 2
    assert push_session(old, store, report=lambda _: None)["skipped"] == 1  # same size: not re-sent
    new = Settings.load({"data_dir": str(tmp_path / "new")}, env={})
    new.ensure_dirs()
    got = pull_session(new, store, checkpoints="none", report=lambda _: None)
    assert got["restored"] == 2
    assert (new.lora_path / "style.safetensors").read_bytes() == b"lora" * 500
    assert (new.data_dir / "styles.csv").read_text() == "name,prompt\n"
