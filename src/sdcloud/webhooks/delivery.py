"""Webhook deliveries: a SQLite log (``<state>/webhooks.sqlite``) and one sender thread.

Every event becomes one row before anything is sent, so a restart resumes pending deliveries.
A failed attempt (connection error, timeout, any non-2xx answer) is retried with exponential
backoff and jitter up to ``max_attempts``; the row keeps each attempt's outcome. The row id is
the event's ``webhook-id`` (its idempotency key): retries and replays send the same id, so a
receiver that remembers ids handles each event once.

SSRF: URLs must be http(s); a host resolving to a loopback, private, link-local or otherwise
non-public address is refused unless ``allow_private``. The address checked is the one
connected to (the request goes to the resolved IP, with the name in ``Host`` and TLS SNI), so
DNS rebinding between check and connect is not a way around it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sdcloud.errors import BadRequest, NotFound
from sdcloud.webhooks.signing import headers_for

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_ATTEMPTS = 8
BASE_DELAY_S = 1.0
MAX_DELAY_S = 300.0
TIMEOUT_S = 10.0
KEEP = 2000  # delivery rows remembered

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created REAL NOT NULL,
    delivered REAL,
    last_status INTEGER,
    last_error TEXT,
    replays INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_at);
"""
_COLS = "id, job_id, event, url, body, state, attempts, next_at, created, delivered, last_status, last_error, replays"


@dataclass
class Delivery:
    id: str
    job_id: str | None
    event: str
    url: str
    body: str
    state: str
    attempts: int
    next_at: float
    created: float
    delivered: float | None
    last_status: int | None
    last_error: str | None
    replays: int

    def to_dict(self) -> dict[str, Any]:
        """Public view: the URL without its query (it may carry a token) and no body."""
        parts = urlsplit(self.url)
        return {
            "id": self.id,
            "job_id": self.job_id,
            "event": self.event,
            "url": urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")),
            "state": self.state,
            "attempts": self.attempts,
            "created": self.created,
            "delivered": self.delivered,
            "next_attempt": self.next_at if self.state == PENDING else None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "replays": self.replays,
        }


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def check_webhook_url(url: str, allow_private: bool = False, *, resolve: bool = True) -> str:
    """Refuse what is not an http(s) URL, and (unless ``allow_private``) a host that resolves to
    a loopback/private/link-local address. Returns the first allowed address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"webhook URL '{_short(url)}' must be http(s)://host/...")
    if not resolve:
        return ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BadRequest(f"webhook host '{parts.hostname}' does not resolve") from None
    addresses = [info[4][0].split("%")[0] for info in infos]
    if not allow_private:
        for address in addresses:
            if _forbidden(ipaddress.ip_address(address)):
                raise BadRequest(
                    f"webhook host '{parts.hostname}' is a local or private address ({address}); refused "
                    "(start the server with --webhook-allow-private to allow it)"
                )
    return addresses[0]


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def backoff_delay(attempt: int, base: float = BASE_DELAY_S, cap: float = MAX_DELAY_S) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with full jitter on the upper half."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


class WebhookSender:
    """Durable outgoing webhooks. ``send`` journals an event; a thread delivers it."""

    def __init__(self, path: Path, secret: str, *, allow_private: bool = False,
                 max_attempts: int = MAX_ATTEMPTS, base_delay: float = BASE_DELAY_S,
                 timeout: float = TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self._lock = threading.Lock()
        self._wake = threading.Condition(threading.Lock())
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # producing -------------------------------------------------------------------------
    def send(self, url: str, event: str, data: dict[str, Any], job_id: str | None = None) -> str:
        """Journal one event for ``url``; return its webhook-id."""
        msg_id = "msg_" + uuid.uuid4().hex
        body = json.dumps({"type": event, "timestamp": _iso(time.time()), "data": data},
                          separators=(",", ":"), sort_keys=True)
        now = time.time()
        with self._lock:
            self._db.execute(
                f"INSERT INTO deliveries ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (msg_id, job_id, event, url, body, PENDING, 0, now, now, None, None, None, 0),
            )
        self._poke()
        return msg_id

    def replay(self, msg_id: str) -> Delivery:
        """Send a logged event again (same webhook-id, fresh timestamp and signature)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE deliveries SET state=?, attempts=0, next_at=?, replays=replays+1 WHERE id=?",
                (PENDING, time.time(), msg_id),
            )
        if cur.rowcount == 0:
            raise NotFound(f"webhook delivery '{msg_id}' not found; see /api/webhooks")
        self._poke()
        return self.get(msg_id)

    # reading ---------------------------------------------------------------------------
    def get(self, msg_id: str) -> Delivery:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLS} FROM deliveries WHERE id=?", (msg_id,)).fetchone()
        if row is None:
            raise NotFound(f"webhook delivery '{msg_id}' not found; see /api/webhooks")
        return Delivery(*row)

    def list(self, limit: int = 100, job_id: str | None = None, state: str | None = None) -> list[Delivery]:
        where, args = [], []
        if job_id:
            where.append("job_id=?")
            args.append(job_id)
        if state:
            where.append("state=?")
            args.append(state)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM deliveries {clause} ORDER BY seq DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [Delivery(*r) for r in rows]

    def body(self, msg_id: str) -> str:
        return self.get(msg_id).body

    # delivering ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="sdcloud-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _poke(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _due(self) -> tuple[list[Delivery], float | None]:
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM deliveries WHERE state=? AND next_at<=? ORDER BY seq LIMIT 32",
                (PENDING, now),
            ).fetchall()
            nxt = self._db.execute(
                "SELECT MIN(next_at) FROM deliveries WHERE state=?", (PENDING,)
            ).fetchone()[0]
        return [Delivery(*r) for r in rows], nxt

    def _loop(self) -> None:
        while not self._stopping:
            due, nxt = self._due()
            for d in due:
                if self._stopping:
                    return
                self._attempt(d)
            if due:
                continue
            wait = 5.0 if nxt is None else max(0.01, min(5.0, nxt - time.time()))
            with self._wake:
                if not self._stopping:
                    self._wake.wait(wait)

    def _attempt(self, d: Delivery) -> None:
        try:
            status, error = self._post(d)
        except Exception as err:  # a bug must not stop every other delivery
            log.exception("webhook %s failed", d.id)
            status, error = None, f"{type(err).__name__}: {err}"[:300]
        attempts = d.attempts + 1
        now = time.time()
        if status is not None and 200 <= status < 300:
            state, next_at, delivered = DELIVERED, now, now
        elif attempts >= self.max_attempts or error and error.startswith("refused:"):
            state, next_at, delivered = FAILED, now, None
            log.warning("webhook %s %s to %s gave up after %d attempts: %s", d.id, d.event,
                        d.to_dict()["url"], attempts, error or f"HTTP {status}")
        else:
            state, next_at, delivered = PENDING, now + backoff_delay(attempts, self.base_delay), None
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET state=?, attempts=?, next_at=?, delivered=?, last_status=?, "
                "last_error=? WHERE id=?",
                (state, attempts, next_at, delivered, status, error, d.id),
            )
        if state != PENDING:
            self._prune()

    def _post(self, d: Delivery) -> tuple[int | None, str | None]:
        import httpx

        body = d.body.encode("utf-8")
        try:
            address = check_webhook_url(d.url, self.allow_private)
        except BadRequest as err:
            return None, f"refused: {err.message}"
        parts = urlsplit(d.url)
        host_ip = f"[{address}]" if ":" in address else address
        netloc = host_ip + (f":{parts.port}" if parts.port else "")
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = headers_for(self.secret, d.id, body)
        headers["host"] = parts.netloc.rpartition("@")[2]
        headers["user-agent"] = "sdcloud-webhooks"
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                req = client.build_request("POST", pinned, content=body, headers=headers,
                                           extensions={"sni_hostname": parts.hostname})
                resp = client.send(req)
        except httpx.HTTPError as err:
            return None, f"{type(err).__name__}: {err}"[:300]
        return resp.status_code, None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"

    def _prune(self) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM deliveries WHERE state!=? AND seq IN (SELECT seq FROM deliveries "
                "ORDER BY seq DESC LIMIT -1 OFFSET ?)", (PENDING, KEEP),
            )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
