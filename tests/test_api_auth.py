"""Auth: HTTP Basic (like A1111's --api-auth) and bearer tokens on every path; a server
reachable beyond loopback never runs without auth unless --insecure."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi

from sdcloud.api.security import GENERATED_USER, check_exposure, exposure_auth, read_auth_file
from sdcloud.errors import BadRequest
from sdcloud.settings import Settings

GUARDED = ("/sdapi/v1/options", "/api/queue", "/docs", "/openapi.json", "/", "/config")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_loopback_server_without_auth_is_open(sdcloud_server: Any) -> None:
    assert httpx.get(sdcloud_server.url + "/sdapi/v1/options").status_code == 200


def test_basic_auth_and_token_guard_every_path(start_server: Any, tmp_path: Path) -> None:
    auth_file = tmp_path / "logins.txt"
    auth_file.write_text("bob:hunter2\ncarol:pw3\n")
    server = start_server(
        "--auth",
        "alice:s3cret",
        "--auth-file",
        str(auth_file),
        "--api-token",
        "tok-123",
        auth=("alice", "s3cret"),
        ui=True,
    )
    url = server.url
    for path in GUARDED:
        r = httpx.get(url + path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["error"] == "Unauthorized"
        assert httpx.get(url + path, headers=basic("alice", "wrong")).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url + "/sdapi/v1/txt2img", json={}).status_code == 401
    for headers in (
        basic("alice", "s3cret"),
        basic("bob", "hunter2"),
        basic("carol", "pw3"),
        {"Authorization": "Bearer tok-123"},
        basic("anyone", "tok-123"),
    ):
        assert httpx.get(url + "/sdapi/v1/options", headers=headers).status_code == 200
        assert httpx.get(url + "/docs", headers=headers).status_code == 200
    ui = httpx.get(url + "/", headers=basic("alice", "s3cret"))
    assert ui.status_code == 200 and "gradio" in ui.text.lower()  # the web UI, behind the same login
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, username="alice", password="s3cret")
    assert api.get_options()["sd_model_checkpoint"] == "demo"
    assert "s3cret" not in server.log() and "tok-123" not in server.log()


def test_exposed_server_gets_a_generated_password() -> None:
    settings = Settings.load({"host": "0.0.0.0"}, env={})
    safe, password = exposure_auth(settings)
    assert password and len(password) >= 16
    assert safe.auth == (f"{GENERATED_USER}:{password}",)
    check_exposure(safe)
    again = exposure_auth(settings)[1]
    assert again != password  # a fresh one each start
    assert exposure_auth(Settings.load({"host": "127.0.0.1"}, env={})) == (
        Settings.load({"host": "127.0.0.1"}, env={}),
        None,
    )
    assert exposure_auth(Settings.load({"host": "127.0.0.1"}, env={}), public_url=True)[1]
    given = Settings.load({"host": "0.0.0.0", "auth": "u:p"}, env={})
    assert exposure_auth(given) == (given, None)
    token = Settings.load({"host": "0.0.0.0", "api_token": "t"}, env={})
    assert exposure_auth(token) == (token, None)
    insecure = Settings.load({"host": "0.0.0.0", "insecure": True}, env={})
    assert exposure_auth(insecure) == (insecure, None)
    check_exposure(insecure)
    with pytest.raises(BadRequest, match="without auth"):
        check_exposure(settings)


def test_create_app_refuses_an_exposed_server_without_auth(tmp_path: Path) -> None:
    from sdcloud.api.app import create_app

    with pytest.raises(BadRequest, match="--insecure"):
        create_app(Settings.load({"host": "0.0.0.0", "data_dir": str(tmp_path)}, env={}), ui=False)


def test_auth_file_format() -> None:
    assert read_auth_file("a:b, c:d\ne:f:g\n\n") == ("a:b", "c:d", "e:f:g")
    with pytest.raises(BadRequest):
        read_auth_file("nocolon")
