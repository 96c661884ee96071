"""Hostile input: what an attacker with (or without) credentials can send to ``sdcloud serve``.

Every case of issue 19: no request stalls the server (infotext parsing is linear and capped,
image text and pixels are bounded before decompression, image work runs in a bounded pool);
errors name no folder of the server; empty credentials are refused; a full disk fails one job
with 507 and the worker lives on; URL fetches only where allowed and never to private
addresses. Run alone with ``pytest -m hostile``.
"""

from __future__ import annotations

import base64
import errno
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import ServerProcess, free_port, launch
from sdcloud.api.image_input import _forbidden_address, decode_image, fetch_url_image
from sdcloud.api.services import check_client_value
from sdcloud.errors import BadRequest, redact_paths
from sdcloud.image_files import read_image_infotext
from sdcloud.infotext import MAX_INFOTEXT_CHARS, parse_infotext
from sdcloud.jobs import DONE, FAILED, JobContext, LocalJobQueue
from sdcloud.settings import Limits, Settings
from sdcloud.storage.stores import parse_store_url, redact_url

pytestmark = pytest.mark.hostile

AUTH = ("me", "secret")


# ----------------------------------------------------------------------------- hostile images


def png_with_text(text: str, *, compressed: bool, size: tuple[int, int] = (64, 64)) -> bytes:
    """A PNG whose ``parameters`` chunk holds ``text`` as tEXt or zTXt, written by hand so the
    chunk is exactly what an attacker sends (Pillow's writer would choose for us)."""
    buf = io.BytesIO()
    Image.new("RGB", size, "gray").save(buf, format="PNG")
    png = buf.getvalue()
    iend = png.rindex(b"IEND") - 4
    if compressed:
        kind, data = b"zTXt", b"parameters\0\0" + zlib.compress(text.encode("latin-1"), 9)
    else:
        kind, data = b"tEXt", b"parameters\0" + text.encode("latin-1")
    chunk = len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    return png[:iend] + chunk + png[iend:]


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims ``width`` x ``height`` (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_infotext_parsing_is_linear_on_the_worst_texts() -> None:
    n = 1 << 20
    for text in ("a" * n, "ab:" * (n // 3), 'a: "x, ' * (n // 7), "\\" * n, "a " * (n // 2)):
        started = time.perf_counter()
        parse_infotext(text[:MAX_INFOTEXT_CHARS])  # the most that can reach it
        assert time.perf_counter() - started < 3.0, text[:10]  # A1111's regex: 40 s and more
    started = time.perf_counter()
    for text in ("(a" * 32768 + ")" * 16384, "[[[[:" * 13000):  # quadratic in A1111's attention parser
        parse_infotext(text + "\nSteps: 1, Seed: 2, Size: 8x8")
    assert time.perf_counter() - started < 3.0  # 30 s and 60 s before


@pytest.mark.parametrize("compressed", [False, True])
def test_oversized_parameters_chunks_are_refused_quickly(compressed: bool) -> None:
    settings = Settings(data_dir=Path("/nonexistent"))
    for size in (MAX_INFOTEXT_CHARS + 1, 1 << 20):
        data = png_with_text("x" * size, compressed=compressed)
        started = time.perf_counter()
        with pytest.raises(BadRequest, match="parameters text is|text chunk over"):
            read_image_infotext(decode_image(b64(data), settings))
        assert time.perf_counter() - started < 1.0
    if compressed:
        assert len(png_with_text("x" * (1 << 20), compressed=True)) < 2000  # the 1.5 KB stall of the issue
    ok = png_with_text("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64", compressed=compressed)
    assert read_image_infotext(decode_image(b64(ok), settings)).startswith("a cat")


def test_decompression_bombs_are_refused_naming_the_pixel_limit() -> None:
    settings = Settings(data_dir=Path("/nonexistent"))
    for w, h in ((20000, 20000), (5000, 5000)):
        with pytest.raises(BadRequest, match=r"pixels.*limits\.max_image_pixels"):
            decode_image(b64(png_header_only(w, h)), settings)


def test_client_values_with_lone_surrogates_or_deep_nesting_are_400() -> None:
    with pytest.raises(BadRequest, match="surrogate"):
        check_client_value("\ud800 x", "prompt")
    nested: Any = 1
    for _ in range(500):
        nested = [nested]
    with pytest.raises(BadRequest, match="nested more than"):
        check_client_value(nested, "script_args")
    check_client_value({"a": [1, "ok", {"b": None}]}, "fine")


# ----------------------------------------------------------------------------- numbers that overflow


def test_numbers_too_large_for_a_float_are_400_naming_the_field() -> None:
    """``1e400`` is infinity in JSON and ``float()``; ``int(inf)`` raises OverflowError (a 500)."""
    from sdcloud.controlnet import preprocessors
    from sdcloud.controlnet.units import parse_unit, unit_from_infotext
    from sdcloud.prompt_syntax import check_editing
    from sdcloud.scripts.base import as_number
    from sdcloud.scripts.xyz_grid import expand

    inf = float("inf")
    for field in ("processor_res", "threshold_a", "weight", "guidance_end"):
        for value in (inf, -inf, float("nan"), "1e400"):
            with pytest.raises(BadRequest, match=f"ControlNet unit 2: {field} must be a"):
                parse_unit({"module": "canny", field: value}, 2)
    with pytest.raises(BadRequest, match="processor_res must be between"):
        parse_unit({"processor_res": 10**400}, 0)
    assert parse_unit({"processor_res": 256.0, "threshold_a": "50"}, 0).processor_res == 256
    assert unit_from_infotext("Module: canny, Processor Res: 1e400, Threshold A: 1e400") == {
        "module": "canny", "processor_res": 512}
    with pytest.raises(BadRequest, match="threshold_a must be a finite number"):
        preprocessors.check_thresholds("canny", inf, -1)
    with pytest.raises(BadRequest, match="threshold_a of module 'blur_gaussian' must be between 0.01 and 64"):
        preprocessors.check_thresholds("blur", 1e9, -1)  # a sigma of 10^9 would blur for hours
    assert preprocessors.check_thresholds("canny", -1, 200) == (-1, 200)
    for prompt in ("[a:b:1e400]", "[a:b:-1e400]", "x [a:1e400] y", "[a::1E999]"):
        with pytest.raises(BadRequest, match=r"prompt editing step .* is out of range"):
            check_editing(prompt)
    check_editing("[a:b:0.5] [c:10] [d::1e300] (e:1e400)")  # finite steps; weights are not steps
    from sdcloud.prompt_syntax import extract_extra_networks

    with pytest.raises(BadRequest, match=r"weight '1e400' is not a number"):
        extract_extra_networks("a <lora:x:1e400>")[1][0].te_multiplier  # noqa: B018
    with pytest.raises(BadRequest, match="denoise must be a finite number"):
        as_number(1e400, "denoise", 0, 1, int)
    with pytest.raises(BadRequest, match="steps must be a number"):
        as_number(10**400, "steps", 1, 150, int)  # too large for a float
    for kind, text in (("int", "1-" + "9" * 400), ("float", "1-" + "9" * 400), ("int", "1-3 [" + "9" * 400 + "]"),
                       ("float", "-1e308-1e308 (+1e-308)")):
        with pytest.raises(BadRequest):
            expand(kind, [text])
    from sdcloud.api.options import validate_kept
    from sdcloud.ui.params import img2img_request, txt2img_request

    with pytest.raises(BadRequest, match="steps must be a finite number"):  # a UI event posted by hand
        txt2img_request({"steps": inf})
    with pytest.raises(BadRequest, match="mask_blur must be a"):
        img2img_request({"mask_blur": "1e400"}, "img", "mask")

    for value in (inf, float("nan")):  # kept A1111 options: a stored infinity would break every later answer
        with pytest.raises(BadRequest, match="interrogate_clip_dict_limit"):
            validate_kept({"interrogate_clip_dict_limit": value})
    with pytest.raises(BadRequest, match="makes 9999999999 values"):
        expand("int", ["1-9999999999"])  # refused before a list of 10^10 ints is made
    with pytest.raises(BadRequest, match="Prompt order of 11 words"):
        expand("perm", [str(i) for i in range(11)])  # 39916800 orders


def test_generate_with_an_infinite_editing_step_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(tmp_path), "generate", "[a:b:1e400]",
                        "--model", "demo", "--steps", "1", "--size", "64x64"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-500:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "prompt editing step '1e400' is out of range" in lines[0], r.stderr


# ----------------------------------------------------------------------------- dataset uploads (zip bombs)


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _lie_about_sizes(data: bytes, size: int) -> bytes:
    """The zip with every member's uncompressed size (local and central headers) set to ``size``."""
    out = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (at := out.find(sig, start)) != -1:
            out[at + offset:at + offset + 4] = size.to_bytes(4, "little")
            start = at + 4
    return bytes(out)


def test_dataset_uploads_are_bounded_and_all_or_nothing(tmp_path: Path) -> None:
    from sdcloud.api.training import TrainingService
    from sdcloud.errors import SdcloudError, TooLarge

    svc = TrainingService(Settings(data_dir=tmp_path, limits=Limits(max_dataset_upload_bytes=100_000)), None, None)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    bomb = _zip({"a.png": png.getvalue(), "b.png": b"\0" * 1_000_000})  # 1 MB of zeros: a 1 KB zip
    assert len(bomb) < 3000
    datasets = tmp_path / "datasets"

    def nothing_written() -> None:
        assert not datasets.exists() or [p.name for p in datasets.iterdir()] in ([], ["kept"]), list(datasets.iterdir())

    with pytest.raises(TooLarge, match=r"unpacks to 1000\d+ bytes; at most 100000 .*limits\.max_dataset_upload_bytes"):
        svc.upload("bomb", [("data.zip", bomb)])
    nothing_written()
    with pytest.raises(SdcloudError) as err:  # headers that claim 10 bytes: counted while inflating
        svc.upload("bomb", [("data.zip", _lie_about_sizes(bomb, 10))])
    assert 400 <= err.value.status < 500 and ("cannot be read" in err.value.message or "unpacks to" in
                                               err.value.message), err.value.message
    nothing_written()
    many = _zip({f"{i}.txt": b"" for i in range(5001)})
    with pytest.raises(BadRequest, match="too many files"):
        svc.upload("bomb", [("many.zip", many)])
    with pytest.raises(BadRequest, match="must be plain"):  # the second file is bad: the first is not kept
        svc.upload("bomb", [("a.png", png.getvalue()), ("b;rm.png", png.getvalue())])
    nothing_written()
    assert svc.upload("kept", [("data.zip", _zip({"a.png": png.getvalue(), "a.txt": b"cat"}))])["saved"] == 2
    assert svc.upload("kept", [("b.png", png.getvalue())], folder="5_sks cat")["saved"] == 1
    files = sorted(str(p.relative_to(datasets / "kept")) for p in (datasets / "kept").rglob("*") if p.is_file())
    assert files == ["5_sks cat/b.png", "a.png", "a.txt"]
    assert [p.name for p in datasets.iterdir()] == ["kept"]  # no temp folder left behind


# ----------------------------------------------------------------------------- credentials, secrets


@pytest.mark.parametrize("auth", ["me:", ":secret", "me", "ok:pw,me:"])
def test_empty_user_or_password_is_refused(auth: str) -> None:
    with pytest.raises(BadRequest, match="user:password") as err:
        Settings.load({"auth": auth}, env={})
    assert "secret" not in str(err.value)  # a password is never repeated


def test_serve_with_an_empty_password_exits_with_one_line(tmp_path: Path) -> None:
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("ok:pw\nbob:\n")
    for flags in (["--auth", "me:"], ["--auth-file", str(auth_file)]):
        r = subprocess.run(
            [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(tmp_path), "serve", "--nowebui", *flags],
            capture_output=True, text=True, timeout=120,
        )
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "empty password" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_store_urls_are_redacted_and_query_credentials_refused() -> None:
    assert redact_url("s3://AKIA:topsecret@bucket/prefix") == "s3://***@bucket/prefix"
    with pytest.raises(BadRequest) as err:
        parse_store_url("s3://AKIA:topsecret@bucket/prefix")
    assert "topsecret" not in err.value.message and "s3://***@bucket" in err.value.message
    with pytest.raises(BadRequest, match="AWS_SECRET_ACCESS_KEY") as err:
        parse_store_url("s3://bucket/prefix?secret=topsecret")
    assert "topsecret" not in err.value.message
    assert parse_store_url("s3://bucket/prefix").prefix == "prefix"


def test_paths_are_cut_from_library_messages() -> None:
    text = "[Errno 28] No space left on device: '/home/user/data/outputs/x.png'"
    assert redact_paths(text) == "[Errno 28] No space left on device: 'x.png'"


# ----------------------------------------------------------------------------- outbound fetches


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::", "2002:a00:1::", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "::ffff:127.0.0.1",
     "::ffff:10.0.0.1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::7f00:1"],
)
def test_ipv6_forms_that_embed_a_private_ipv4_are_refused(address: str) -> None:
    assert _forbidden_address(ipaddress.ip_address(address))


def test_ipv6_forms_that_embed_a_public_ipv4_are_judged_as_it() -> None:
    assert not _forbidden_address(ipaddress.ip_address("::ffff:1.1.1.1"))
    assert not _forbidden_address(ipaddress.ip_address("2606:4700:4700::1111"))


class _Listener:
    """A loopback HTTP server counting its requests; ``/slow`` trickles a byte every 0.3 s."""

    def __init__(self) -> None:
        self.hits = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                listener.hits += 1
                body = b"x" * 4096
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) * (100 if self.path == "/slow" else 1)))
                self.end_headers()
                if self.path == "/slow":
                    try:
                        for _ in range(200):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.3)
                    except OSError:  # the client gave up, as it should
                        pass
                else:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.close()


def test_url_fetches_check_the_connected_address_and_obey_deadline_and_size(
    listener: _Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = Settings(data_dir=tmp_path, allow_url_images=True)
    base = f"http://127.0.0.1:{listener.port}"
    for url in (f"{base}/x.png", f"http://localhost:{listener.port}/x.png", "http://[2002:7f00:1::]:1/x.png"):
        with pytest.raises(BadRequest, match="local or private"):
            fetch_url_image(url, allowed, "image")
    assert listener.hits == 0  # refused before anything reached the listener

    # the rest needs a reachable sender: loopback is allowed for this test only
    def anywhere(_ip: Any) -> bool:
        return True

    assert len(fetch_url_image(f"{base}/x.png", allowed, "image", address_ok=anywhere)) == 4096
    small = Settings(data_dir=tmp_path, allow_url_images=True, limits=Limits(max_body_bytes=1000))
    with pytest.raises(BadRequest, match="larger than 1000 bytes"):
        fetch_url_image(f"{base}/x.png", small, "image", address_ok=anywhere)
    monkeypatch.setattr("sdcloud.api.image_input.URL_DEADLINE_S", 1.5)
    started = time.monotonic()
    with pytest.raises(BadRequest, match="took longer than"):
        fetch_url_image(f"{base}/slow", allowed, "image", address_ok=anywhere)
    assert time.monotonic() - started < 3.0  # a trickling sender cannot hold the thread


def _gradio_file(url: str) -> dict[str, Any]:
    return {"path": url, "url": url, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}


def test_ui_file_payloads_with_urls_obey_allow_url_images(listener: _Listener, tmp_path: Path) -> None:
    """The guard create_app puts in front of the Gradio UI, around a stand-in for Gradio that
    records what reaches it (building the real UI takes longer than this whole suite should)."""
    from fastapi.testclient import TestClient

    from sdcloud.api.ui_guard import UIFileURLGuard

    reached: list[Any] = []

    async def gradio(scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reached.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    url = f"http://127.0.0.1:{listener.port}/x.png"
    body = {"data": ["a prompt", {"nested": [_gradio_file(url)]}], "fn_index": 0, "session_hash": "abc"}
    for allow, message in ((False, "--allow-url-images"), (True, "local or private")):
        settings = Settings(data_dir=tmp_path, allow_url_images=allow)
        client = TestClient(UIFileURLGuard(gradio, settings))
        for path in ("/gradio_api/queue/join", "/gradio_api/run/predict", "/gradio_api/call/x"):
            r = client.post(path, json=body)
            assert r.status_code == 400 and message in r.json()["detail"], (path, r.text[:300])
        assert client.post("/gradio_api/queue/join", json={"data": ["no files"]}).status_code == 200
    assert listener.hits == 0 and reached == [{"data": ["no files"]}] * 2


def test_ui_file_urls_when_allowed_are_fetched_by_us_and_handed_over_as_uploads(
    listener: _Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from sdcloud.api.ui_guard import UIFileURLGuard

    reached: list[Any] = []

    async def gradio(scope: dict, receive: Any, send: Any) -> None:
        message = await receive()
        reached.append(json.loads(message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    monkeypatch.setattr("sdcloud.api.image_input._forbidden_address", lambda _ip: False)  # reach loopback
    client = TestClient(UIFileURLGuard(gradio, Settings(data_dir=tmp_path, allow_url_images=True)))
    url = f"http://127.0.0.1:{listener.port}/cat.png?x=1"
    assert client.post("/gradio_api/queue/join", json={"data": [_gradio_file(url)]}).status_code == 200
    handed = reached[0]["data"][0]
    assert listener.hits == 1 and handed["url"] is None and handed["size"] == 4096
    local = Path(handed["path"])
    assert local.name == "cat.png" and local.is_relative_to(tmp_path / "uploads") and local.stat().st_size == 4096


# ----------------------------------------------------------------------------- the job worker


def test_a_full_disk_fails_one_job_and_the_worker_lives_on(tmp_path: Path) -> None:
    """ENOSPC simulated at the write layer (the server test below uses a real full filesystem
    where this machine lets the test mount one): the failing job gets 507's message, the journal
    write that fails is retried, and the next job runs."""
    full = {"on": True}

    def save(ctx: JobContext) -> dict:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "outputs" / "x.png"))
        return {"ok": True}

    q = LocalJobQueue(tmp_path / "state", {"save": save}, data_dir=tmp_path / "mydata")
    original = q.journal.update
    broken = {"on": True}

    def flaky_update(job: Any) -> None:
        if broken["on"] and job.state == FAILED:
            raise __import__("sqlite3").OperationalError("database or disk is full")
        original(job)

    q.journal.update = flaky_update  # type: ignore[method-assign]
    q.start()
    try:
        job = q.wait(q.submit("save", {}).id, timeout=10)
        assert job.state == FAILED and job.error_status == 507
        assert re.fullmatch(r"disk full: \d+ MB free in mydata; free space and retry", job.error), job.error
        assert str(tmp_path) not in job.error
        full["on"], broken["on"] = False, False
        assert q.wait(q.submit("save", {}).id, timeout=10).state == DONE  # same worker thread
        assert q.journal.get(job.id).state == FAILED  # the failed journal write caught up
    finally:
        q.stop()


# ----------------------------------------------------------------------------- against a server


SMALL_DISK_MB = 64


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                       capture_output=True, timeout=30)
    return r.returncode == 0


UPLOAD_CAP = 500_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the suite (auth me:secret, 8 MiB bodies). Its data dir is a small tmpfs of
    its own where this machine lets the test mount one (root), so the last test can fill it."""
    root = tmp_path_factory.mktemp("hostile")
    disk = root / "small-disk"
    disk.mkdir()
    mounted = _mount_tmpfs(disk, SMALL_DISK_MB)
    srv = launch(disk, "--auth", "me:secret", auth=AUTH, log_path=root / "server.log",
                 env={"SDCLOUD_MAX_BODY_BYTES": str(8 * 1024 * 1024), "SDCLOUD_MIN_FREE_MB": str(2 * SMALL_DISK_MB),
                      "SDCLOUD_MAX_DATASET_UPLOAD_BYTES": str(UPLOAD_CAP)})
    srv.small_disk = mounted  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


class OptionsProbe:
    """GET /sdapi/v1/options in a loop while something else runs; records each answer's time."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/sdapi/v1/options", timeout=30).status_code == 200
                self.times.append(time.perf_counter() - started)
                time.sleep(0.05)

    def __enter__(self) -> OptionsProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True])
def test_png_info_with_a_1mb_parameters_chunk_does_not_stall_the_server(
    server: ServerProcess, compressed: bool
) -> None:
    data = png_with_text("x" * (1 << 20), compressed=compressed)
    with server.client() as client, OptionsProbe(server) as probe:
        time.sleep(0.2)
        started = time.perf_counter()
        r = client.post("/sdapi/v1/png-info", json={"image": b64(data)})
        took = time.perf_counter() - started
        time.sleep(0.2)
    assert r.status_code == 400 and "parameters text" in r.json()["detail"] or "text chunk" in r.json()["detail"]
    assert took < 5.0
    assert probe.times and max(probe.times) < 2.0, probe.times


@pytest.mark.slow
def test_hostile_requests_are_4xx_without_paths(server: ServerProcess) -> None:
    data_dir = str(server.data_dir)
    home = str(Path.home())
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    image = b64(buf.getvalue())
    cases: list[tuple[str, str, Any]] = [
        ("post", "/sdapi/v1/options", {"sd_model_checkpoint": "no-such-model"}),
        ("post", "/sdapi/v1/options", {"sd_vae": "no-such-vae.safetensors"}),
        ("post", "/sdapi/v1/txt2img", {"prompt": "\ud800 x", "steps": 1, "width": 64, "height": 64}),
        ("post", "/sdapi/v1/txt2img", {"infotext": "a" * 65537, "steps": 1}),
        ("post", "/sdapi/v1/txt2img", {"script_args": json.loads("[" * 500 + "]" * 500), "steps": 1,
                                       "width": 64, "height": 64}),
        ("post", "/sdapi/v1/txt2img", {"prompt": "x", "width": 4096, "steps": 1}),
        ("post", "/sdapi/v1/img2img", {"init_images": [b64(png_header_only(20000, 20000))], "steps": 1}),
        ("post", "/sdapi/v1/img2img", {"init_images": ["http://169.254.169.254/latest"], "steps": 1}),
        ("post", "/sdapi/v1/png-info", {"image": b64(b"not an image")}),
        ("post", "/sdapi/v1/extra-single-image", {"image": b64(png_header_only(20000, 20000))}),
        ("post", "/api/ckpt/inspect", {"model": "../../../etc/passwd"}),
        ("post", "/api/ckpt/merge", {"a": "nope", "b": "nope2", "output": "x"}),
        ("get", "/api/queue/nope", None),
        ("get", "/api/queue/nope/images/0", None),
        # numbers too large for a float (raw JSON: 1e400 is infinity once parsed)
        ("post", "/sdapi/v1/txt2img", b'{"prompt": "[a:b:1e400]", "steps": 1, "width": 64, "height": 64}'),
        ("post", "/sdapi/v1/txt2img", b'{"prompt": "[a:b:-1e400]", "steps": 1, "width": 64, "height": 64}'),
        ("post", "/sdapi/v1/txt2img", b'{"prompt": "x", "steps": 1, "width": 64, "height": 64, "alwayson_scripts": '
                                      b'{"controlnet": {"args": [{"module": "canny", "processor_res": 1e400, '
                                      b'"image": "' + image.encode() + b'"}]}}}'),
        ("post", "/controlnet/detect", b'{"controlnet_module": "canny", "controlnet_threshold_a": 1e400, '
                                       b'"controlnet_input_images": ["' + image.encode() + b'"]}'),
        # what exists is named by the route that lists it, never by the server's folder
        ("post", "/sdapi/v1/interrogate", {"image": image}),
        ("post", "/sdapi/v1/interrogate", {"image": image, "model": "deepdanbooru"}),
        ("post", "/controlnet/detect", {"controlnet_module": "openpose", "controlnet_input_images": [image]}),
        ("post", "/controlnet/detect", {"controlnet_module": "nope", "controlnet_input_images": [image]}),
        ("post", "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64, "alwayson_scripts": {
            "controlnet": {"args": [{"module": "canny", "model": "no-such-cn", "image": image}]}}}),
        ("post", "/api/train", {"dataset": "tiny", "name": "t", "options": {"steps": 1}}),
        ("post", "/api/train", {"dataset": "empty", "name": "t", "options": {"steps": 1}}),
        ("post", "/api/train", {"dataset": "no-such-dataset", "name": "t"}),
        ("post", "/api/train", {"dataset": "../../etc", "name": "t"}),
        ("get", "/api/train/datasets/no-such-dataset/check", None),
        ("post", "/api/train/datasets/..%2F..%2Fetc", {"x": 1}),
    ]
    tiny = server.data_dir / "datasets" / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), "red").save(tiny / "a.png")
    (server.data_dir / "datasets" / "empty").mkdir(exist_ok=True)
    with server.client() as client:
        for method, path, body in cases:
            started = time.perf_counter()
            if body is None:
                r = client.request(method.upper(), path)
            else:
                r = client.request(method.upper(), path,
                                   content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                   headers={"content-type": "application/json", "connection": "close"})
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
            assert time.perf_counter() - started < 2.0, path
            assert data_dir not in r.text and home not in r.text, (path, r.text[:300])
            assert not re.search(r'(?<![\w.])/(home|root|tmp|usr|etc|var)/', r.text), (path, r.text[:300])
        unknown = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"}).json()
        assert "no-such-model" in unknown["detail"] and "/sdapi/v1/sd-models" in unknown["detail"]
        small = client.post("/api/train", json={"dataset": "tiny", "name": "t", "options": {"steps": 1}}).json()
        assert "dataset 'tiny': 1 image(s) too small" in small["detail"], small
        report = json.dumps(client.get("/api/train/datasets/tiny/check").json())
        assert "too small" in report and data_dir not in report and not re.search(r'(?<![\w.])/tmp/', report)
        empty = client.get("/api/train/datasets/empty/check").json()
        assert empty["errors"][0].startswith("no training images in dataset 'empty' (looked for .png"), empty
        unknown_cn = client.post("/controlnet/detect", json={"controlnet_module": "openpose",
                                                             "controlnet_input_images": [image]}).json()
        assert "models/ControlNet/annotators/openpose/" in unknown_cn["detail"], unknown_cn
        bomb = client.post("/sdapi/v1/png-info", json={"image": b64(png_header_only(20000, 20000))})
        assert bomb.status_code == 400 and "max_image_pixels" in bomb.json()["detail"]
        assert client.get("/sdapi/v1/progress").status_code == 200


@pytest.mark.slow
def test_a_zip_bomb_upload_is_413_and_writes_nothing(server: ServerProcess) -> None:
    bomb = _zip({"a.png": b"\0" * (UPLOAD_CAP + 1)})
    with server.client() as client:
        started = time.perf_counter()
        r = client.post("/api/train/datasets/bomb", files=[("files", ("data.zip", bomb))])
        assert r.status_code == 413 and "limits.max_dataset_upload_bytes" in r.json()["detail"], r.text
        assert time.perf_counter() - started < 2.0
        assert "bomb" not in [d["name"] for d in client.get("/api/train/datasets").json()["datasets"]]
    datasets = server.data_dir / "datasets"
    assert not (datasets / "bomb").exists()
    assert not datasets.exists() or not [p for p in datasets.iterdir() if p.name.startswith(".upload-")]


@pytest.mark.slow
def test_secrets_are_nowhere_in_answers_or_log(server: ServerProcess) -> None:
    with server.client() as client:
        for path in ("/sdapi/v1/cmd-flags", "/api/session", "/api/storage", "/sdapi/v1/options", "/openapi.json"):
            r = client.get(path)
            assert r.status_code == 200 and "secret" not in r.text, path
        assert httpx.get(server.url + "/sdapi/v1/options", auth=("me", "")).status_code == 401
    assert "secret" not in server.log()


@pytest.mark.slow
def test_the_web_uis_config_holds_no_password(tmp_path: Path) -> None:
    """Gradio's ``/config`` (the web UI's whole description), which the API-only server above
    does not have. (The password is one no folder name of the test can contain.)"""
    password = "pw-Zq8uX3"
    srv = launch(tmp_path / "data", "--auth", f"me:{password}", auth=("me", password), ui=True)
    try:
        with srv.client() as client:
            for path in ("/config", "/api/session", "/sdapi/v1/cmd-flags"):
                r = client.get(path)
                assert r.status_code == 200 and password not in r.text, (path, r.status_code)
            assert httpx.get(srv.url + "/config").status_code == 401
        assert password not in srv.log()
    finally:
        srv.stop()


@pytest.mark.slow
def test_schema_fuzzing_with_large_and_nested_bodies_keeps_the_server_responsive(server: ServerProcess) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.openapi import from_dict

    rss_start = rss_mb(server.proc.pid)
    data_dir, home = str(server.data_dir), str(Path.home())
    with server.client() as client:
        spec = client.get("/openapi.json").json()
    schema = from_dict(spec)
    failures: list[str] = []
    statuses: list[int] = []
    deep = json.loads("[" * 200 + "]" * 200)
    large = "(a" * 20000
    hostile = {"prompt": large, "negative_prompt": "\\" * 50000, "script_args": deep, "infotext": "ab:" * 30000,
               "override_settings": {"x": deep}, "styles": ["s"] * 10000}
    operations = [result.ok() for result in schema.get_all_operations()]
    with OptionsProbe(server) as probe:
        for op, mode in ((op, mode) for op in operations for mode in GenerationMode):

            @settings(max_examples=3, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                if isinstance(case.body, dict):
                    case.body.update({k: v for k, v in hostile.items() if k in case.body or case.path.endswith("2img")})
                    if case.path.endswith("2img"):
                        case.body.update({"width": 64, "height": 64, "steps": 1, "batch_size": 1, "n_iter": 1})
                started = time.perf_counter()
                response = case.call(base_url=server.url, auth=AUTH, timeout=60)
                took = time.perf_counter() - started
                statuses.append(response.status_code)
                if response.status_code >= 400 and (data_dir in response.text or home in response.text):
                    failures.append(f"{case.method} {case.formatted_path} -> a server path in {response.text[:200]}")
                if response.status_code >= 500 or (took > 2.0 and not case.path.endswith("2img")):
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} "
                                    f"in {took:.1f}s {response.text[:200]}")

            try:
                call()
            except Unsatisfiable:
                pass
    with server.client() as client:
        for job in client.get("/api/queue", params={"finished": 0}).json()["jobs"]:
            client.post(f"/api/queue/{job['id']}/cancel")
    assert not failures, "\n".join(failures[:20])
    assert len(statuses) > 100 and 400 in statuses
    assert probe.times and max(probe.times) < 1.0, max(probe.times)
    assert rss_mb(server.proc.pid) < rss_start + 200


# ----------------------------------------------------------------------------- a real full disk (last)


@pytest.mark.slow
def test_a_full_filesystem_gives_507_and_the_next_job_runs_after_space_is_freed(server: ServerProcess) -> None:
    if not server.small_disk:  # type: ignore[attr-defined]
        pytest.skip("cannot mount a small tmpfs here (needs root); the in-process ENOSPC test covers the worker")
    disk = server.data_dir
    job = {"prompt": "full", "width": 64, "height": 64, "steps": 1, "save_images": True}
    with server.client() as client:
        assert client.post("/sdapi/v1/txt2img", json=job).status_code == 200
        assert "MB free" in client.get("/api/session").json()["disk_warning"]
        filler = disk / "filler.bin"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # unbuffered: fill to the last page
        try:
            for block in (1 << 20, 4096):
                try:
                    while True:
                        os.write(fd, b"\0" * block)
                except OSError:
                    pass
        finally:
            os.close(fd)
        try:
            full = client.post("/sdapi/v1/txt2img", json=job)
            assert full.status_code == 507, full.text[:300]
            assert re.match(r"disk full: \d+ MB free in small-disk", full.json()["detail"]), full.text
            assert str(disk) not in full.text
            assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0  # nothing stuck
        finally:
            filler.unlink()
        after = client.post("/sdapi/v1/txt2img", json=job)  # the same server, no restart
        assert after.status_code == 200 and len(after.json()["images"]) == 1


def test_a_retried_job_rewrites_the_same_image_names(engine: Any, tmp_path: Path) -> None:
    """The server died after the images were written but before the job recorded them: the retry
    regenerates (same seeds) into the names the first attempt chose, so no second copy appears."""
    from sdcloud.jobs import Job
    from sdcloud.jobs.control import CancelToken
    from sdcloud.jobs.generation import SAVED_RECORD, EngineHost, GenerationRunner

    settings = Settings(data_dir=tmp_path)
    runner = GenerationRunner(settings, EngineHost(engine))
    payload = {"request": {"prompt": "again", "width": 64, "height": 64, "steps": 1, "seed": 7, "batch_size": 2},
               "model": "demo", "save_images": True, "return_grid": False}
    out = tmp_path / "job-out"
    out.mkdir()

    def attempt() -> list[str]:
        ctx = JobContext(Job(id="j1", kind="txt2img", payload=payload), tmp_path / "in", out, CancelToken(),
                         lambda _p: None)
        return runner(ctx)["images"]

    first = attempt()
    (out / SAVED_RECORD).unlink()  # the crash: images on disk, the job's record of them lost
    second = attempt()
    written = sorted(p.name for p in (settings.outputs_path / "txt2img-images").rglob("*.png"))
    assert second == first and len(written) == 2, written


def test_doctor_warns_below_the_free_space_threshold(tmp_path: Path) -> None:
    from sdcloud.cloud.doctor import run_doctor
    from sdcloud.diskspace import low_space_warning

    low = Settings(data_dir=tmp_path, limits=Limits(min_free_mb=10**9))  # more than any disk has
    report = run_doctor(low, env={}, root=tmp_path)
    warnings = [f for f in report.findings if f.level == "warn" and "min_free_mb" in f.detail]
    assert len(warnings) == 1 and "507" in warnings[0].fix
    assert "MB free" in (low_space_warning(tmp_path, 10**9) or "")
    ok = run_doctor(Settings(data_dir=tmp_path, limits=Limits(min_free_mb=1)), env={}, root=tmp_path)
    assert not [f for f in ok.findings if "min_free_mb" in f.detail]


def test_the_image_pool_runs_a_bounded_number_and_turns_the_rest_away() -> None:
    import asyncio

    from sdcloud.api.heavy import HeavyPool
    from sdcloud.errors import Busy

    pool = HeavyPool(workers=1, queue=1)
    gate = threading.Event()
    running: list[int] = []

    def work(n: int) -> int:
        running.append(n)
        gate.wait(5)
        return n

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(pool.run(work, n)) for n in range(3)]
        await asyncio.sleep(0.2)
        assert running == [0]  # one worker: the second waits, the third is turned away
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert results[:2] == [0, 1] and isinstance(results[2], Busy) and results[2].status == 503
    assert "limits.heavy_workers + limits.heavy_queue" in results[2].message

    long = HeavyPool(workers=1, queue=0, what="long requests", setting="long")
    gate.clear()

    async def long_scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(long.run(work, n)) for n in range(2)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(long_scenario())
    finally:
        long.shutdown()
    assert results[0] == 0 and isinstance(results[1], Busy)
    assert "busy with 1 long requests (limits.long_workers + limits.long_queue)" in results[1].message


@pytest.mark.slow
def test_png_info_and_submits_answer_while_two_extras_upscales_run(tmp_path: Path, monkeypatch: Any) -> None:
    """Extras run on the lane for long work, not on the image pool that submits and PNG Info use:
    two upscales that take their time (held here by a gate) leave both answering at once."""
    import uvicorn

    from sdcloud.api.app import create_app
    from sdcloud.api.extras import ExtrasService
    from sdcloud.api.services import Services
    from sdcloud.runtime import Runtime

    gate = threading.Event()
    running: list[int] = []
    real_run = ExtrasService.run

    def slow_run(self: ExtrasService, img: Any, req: Any) -> Any:
        running.append(1)
        gate.wait(60)
        return real_run(self, img, req)

    monkeypatch.setattr(ExtrasService, "run", slow_run)
    port = free_port()
    settings = Settings.load({"data_dir": str(tmp_path), "model": "demo", "host": "127.0.0.1", "port": port}, env={})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, Services(Runtime(settings)), ui=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    image = b64(buf.getvalue())
    info = b64(png_with_text("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64", compressed=False))
    answers: list[int] = []

    def upscale() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            answers.append(c.post("/sdapi/v1/extra-single-image",
                                  json={"image": image, "upscaling_resize": 2}).status_code)

    try:
        deadline = time.monotonic() + 120
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started
        workers = [threading.Thread(target=upscale) for _ in range(2)]
        for w in workers:
            w.start()
        while len(running) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(running) == 2  # both upscales hold a thread now
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            for _ in range(3):
                started = time.perf_counter()
                r = c.post("/sdapi/v1/png-info", json={"image": info})
                assert r.status_code == 200 and r.json()["parameters"]["Seed"] == "1", r.text
                assert time.perf_counter() - started < 1.0
            started = time.perf_counter()
            r = c.post("/api/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
            assert r.status_code == 202 and time.perf_counter() - started < 2.0, r.text
        assert not answers  # the upscales are still held
        gate.set()
        for w in workers:
            w.join(60)
        assert answers == [200, 200]
    finally:
        gate.set()
        server.should_exit = True
        serving.join(60)


@pytest.mark.slow
def test_an_interrupted_generation_answers_the_image_it_had(server: ServerProcess) -> None:
    answer: dict[str, Any] = {}

    def generate() -> None:
        with server.client() as c:
            r = c.post("/sdapi/v1/txt2img", json={"prompt": "stop me", "width": 64, "height": 64, "steps": 150})
            answer.update(status=r.status_code, body=r.json())

    worker = threading.Thread(target=generate)
    worker.start()
    with server.client() as client:
        deadline = time.monotonic() + 60
        while client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post("/sdapi/v1/interrupt").status_code == 200
    worker.join(60)
    assert answer["status"] == 200 and len(answer["body"]["images"]) == 1  # A1111 clients read images[0]
    assert Image.open(io.BytesIO(base64.b64decode(answer["body"]["images"][0]))).size == (64, 64)
