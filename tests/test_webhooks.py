"""Job webhooks: Standard Webhooks signatures, SSRF refusal, retries through induced failures,
the delivery log and replay, against a real loopback receiver (allowed explicitly)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sdcloud.errors import BadRequest
from sdcloud.webhooks import SignatureError, WebhookSender, check_webhook_url, sign, verify
from sdcloud.webhooks.delivery import DELIVERED, FAILED, backoff_delay
from sdcloud.webhooks.signing import new_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example secret


class Receiver:
    """A loopback HTTP receiver that answers 500 to its first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = 500 if outer.fail > 0 else 204
                outer.fail -= 1
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ok(self) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b, s in self.received if s == 204]

    def close(self) -> None:
        self.server.shutdown()


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_signature_matches_the_standard_webhooks_example() -> None:
    # test vector from standard-webhooks/standard-webhooks (libraries' shared test case)
    body = b'{"test": 2432232314}'
    sig = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,bogus " + sig}
    verify(SECRET, headers, body, now=1614265330 + 10)
    with pytest.raises(SignatureError):
        verify(SECRET, headers, body + b" ", now=1614265330)
    with pytest.raises(SignatureError):
        verify(SECRET, headers, body, now=1614265330 + 3600)  # replayed an hour later by an attacker
    with pytest.raises(SignatureError):
        verify(new_secret(), headers, body, now=1614265330)


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    for attempt in range(1, 12):
        d = backoff_delay(attempt, base=1.0, cap=60.0)
        top = min(60.0, 2 ** (attempt - 1))
        assert top / 2 <= d <= top
    assert len({round(backoff_delay(5), 6) for _ in range(20)}) > 1  # jittered


def test_private_and_loopback_urls_are_refused_unless_allowed() -> None:
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://192.168.0.1/x"):
        with pytest.raises(BadRequest, match="private"):
            check_webhook_url(url)
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(BadRequest, match="http"):
            check_webhook_url(url)
    assert check_webhook_url("http://127.0.0.1:9/x", allow_private=True) == "127.0.0.1"


def test_sender_refuses_a_private_address_at_connect_time(tmp_path: Path) -> None:
    receiver = Receiver()
    sender = WebhookSender(tmp_path / "w.sqlite", SECRET, allow_private=False, base_delay=0.05)
    sender.start()
    try:
        msg = sender.send(receiver.url, "job.queued", {"job_id": "x"})
        wait_for(lambda: sender.get(msg).state != "pending")
        d = sender.get(msg)
        assert d.state == FAILED and "private" in d.last_error and d.attempts == 1
        assert receiver.received == []
    finally:
        sender.stop()
        receiver.close()


def test_retries_through_failures_then_replay_keeps_the_id(tmp_path: Path) -> None:
    receiver = Receiver(fail=2)
    sender = WebhookSender(tmp_path / "w.sqlite", SECRET, allow_private=True, base_delay=0.1)
    sender.start()
    try:
        msg = sender.send(receiver.url, "job.succeeded", {"job_id": "j1", "images": ["k"]}, "j1")
        wait_for(lambda: sender.get(msg).state == DELIVERED)
        d = sender.get(msg)
        assert d.attempts == 3 and d.last_status == 204
        assert [s for _, _, s in receiver.received] == [500, 500, 204]
        ids = {h["webhook-id"] for h, _, _ in receiver.received}
        assert ids == {msg}  # one idempotency key for every attempt
        for headers, body, _ in receiver.received:
            verify(SECRET, headers, body)
        assert json.loads(receiver.ok()[0][1])["type"] == "job.succeeded"
        sender.replay(msg)
        wait_for(lambda: len(receiver.ok()) == 2)
        verify(SECRET, receiver.ok()[1][0], receiver.ok()[1][1])
        assert receiver.ok()[1][0]["webhook-id"] == msg
        assert sender.get(msg).replays == 1
        assert "token" not in sender.get(msg).to_dict()["url"]  # the log never shows a query token
    finally:
        sender.stop()
        receiver.close()


def test_pending_deliveries_survive_a_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    first = WebhookSender(tmp_path / "w.sqlite", SECRET, allow_private=True)
    msg = first.send(receiver.url, "job.queued", {"job_id": "j"})  # never started: nothing sent
    second = WebhookSender(tmp_path / "w.sqlite", SECRET, allow_private=True)
    second.start()
    try:
        wait_for(lambda: second.get(msg).state == DELIVERED)
        assert len(receiver.ok()) == 1
    finally:
        second.stop()
        receiver.close()


@pytest.mark.slow
def test_server_sends_signed_job_events_and_replays(start_server: Any, tmp_path: Path) -> None:
    receiver = Receiver(fail=1)
    server = start_server("--webhook-allow-private", env={"SDCLOUD_WEBHOOK_SECRET": SECRET})
    try:
        with server.client() as c:
            r = c.post("/api/txt2img", json={"prompt": "fox", "width": 64, "height": 64, "steps": 4,
                                             "webhook_url": receiver.url})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            # the first (job.queued) attempt fails and is retried, so it may land after later events
            wait_for(lambda: {"job.queued", "job.succeeded"} <= {json.loads(b)["type"] for _, b in receiver.ok()}, 60)
            events = [json.loads(b) for _, b in receiver.ok()]
            assert {"job.queued", "job.started", "job.succeeded"} <= {e["type"] for e in events}
            assert receiver.received[0][2] == 500
            done = next(e for e in events if e["type"] == "job.succeeded")["data"]
            assert done["job_id"] == job_id and done["images"] == [f"/api/jobs/{job_id}/images/0"]
            assert "Steps: 4" in done["infotexts"][0]
            for headers, body in receiver.ok():
                verify(SECRET, headers, body)
            log = c.get("/api/webhooks", params={"job_id": job_id}).json()["deliveries"]
            assert all(d["state"] == "delivered" for d in log)
            assert max(d["attempts"] for d in log) == 2  # the induced failure was retried
            assert "webhook_url" not in c.get(f"/api/jobs/{job_id}").text
            replayed = c.post(f"/api/webhooks/{log[0]['id']}/replay").json()
            assert replayed["replays"] == 1
            wait_for(lambda: sum(h["webhook-id"] == log[0]["id"] for h, _ in receiver.ok()) == 2)
            assert c.post("/api/webhooks/nope/replay").status_code == 404
            bad = c.post("/api/txt2img", json={"prompt": "x", "webhook_url": "gopher://x"})
            assert bad.status_code == 400 and "http" in bad.json()["detail"]
    finally:
        receiver.close()


@pytest.mark.slow
def test_server_refuses_loopback_webhooks_by_default(sdcloud_server: Any) -> None:
    with sdcloud_server.client() as c:
        r = c.post("/api/txt2img", json={"prompt": "x", "webhook_url": "http://127.0.0.1:1/hook"})
        assert r.status_code == 400
        assert "private" in r.json()["detail"]
