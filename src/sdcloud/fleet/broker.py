"""Broker URLs: check them, say clearly what is wrong, and start a private loopback Redis.

``redis://[user:password@]host:port/db`` or ``rediss://...`` (TLS). ``local`` means: this
``serve`` starts its own ``redis-server`` on 127.0.0.1 (random port, password, AOF on) under
``<state>/redis``, and writes the URL for workers on this machine to ``<state>/redis/url``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from sdcloud.errors import BadRequest, SdcloudError


class BrokerError(SdcloudError):
    status = 503


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise BadRequest(f"broker '{redact(url)}' must look like redis://[:password@]host:port/0, "
                         "rediss://... (TLS) or 'local'")
    return url


def connect(url: str, timeout: float = 5.0) -> Any:
    """A redis client that answered PING, or a ``BrokerError`` that says what to fix."""
    import redis

    check_url(url)
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": max(timeout, 10.0),
                              "health_check_interval": 30, "retry_on_timeout": True}
    client = redis.Redis.from_url(url, **kwargs)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise BrokerError(f"broker {redact(url)} refused the login (wrong password or ACL user); check the "
                          "password in the URL") from None
    except redis.ResponseError as err:
        if "NOAUTH" in str(err) or "WRONGPASS" in str(err):
            raise BrokerError(f"broker {redact(url)} needs a password (redis://:PASSWORD@host:port/0)") from None
        raise BrokerError(f"broker {redact(url)} answered an error: {err}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
        reason = str(err).split(".")[0] or type(err).__name__
        raise BrokerError(f"cannot reach broker {redact(url)} ({reason}); is redis-server running there and "
                          "the address right?") from None
    return client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedis:
    """A ``redis-server`` on loopback with AOF, owned by this process (``--broker local``)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise BrokerError("--broker local needs redis-server (Debian/Ubuntu: apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        pw_file = self.folder / "password"
        if pw_file.is_file():
            self.password = pw_file.read_text().strip()
        else:
            self.password = secrets.token_urlsafe(24)
            _write_private(pw_file, self.password)
        conf = self.folder / "redis.conf"
        conf.write_text(
            "bind 127.0.0.1\nprotected-mode yes\n"
            f"port {self.port}\ndir {self.folder}\nappendonly yes\nappendfsync everysec\n"
            f"requirepass {self.password}\nsave \"\"\ndaemonize no\nlogfile {self.folder / 'redis.log'}\n"
        )
        os.chmod(conf, 0o600)
        self.proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                connect(self.url, timeout=1.0).close()
                break
            except BrokerError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "redis.log")
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                    self.stop()
                    raise BrokerError(f"redis-server did not start on 127.0.0.1:{self.port}: "
                                      f"{tail[0] if tail else 'no log'}") from None
                time.sleep(0.1)
        _write_private(self.folder / "url", self.url)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def local_url(state_path: Path) -> str:
    """The URL a ``serve --broker local`` on this machine (same data folder) wrote for workers."""
    path = state_path / "redis" / "url"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise BrokerError(f"no local broker: start 'sdcloud serve --broker local' with the same --data-dir "
                          f"first ({path} is missing)") from None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
