"""Images into the API: base64 / data URL / (opt-in) http(s) URL decoding with the checks a
public server needs (no local or private addresses, size limits). Encoding and the plain
decoding live in ``sdcloud.image_files``."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sdcloud.errors import BadRequest
from sdcloud.image_files import base64_payload, open_image
from sdcloud.settings import Settings

URL_TIMEOUT_S = 5.0
"""Longest wait for any one step of a URL download (connect, each read)."""
URL_DEADLINE_S = 20.0
"""Longest a whole URL download may take: a slow sender cannot hold a thread."""


def decode_image(text: str, settings: Settings, what: str = "image") -> Any:
    """A PIL image (EXIF-transposed, fully loaded) from what A1111 clients send: raw base64,
    a ``data:`` URL or (opt-in) an http(s) URL, within the server's size limits."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} is empty; send a base64-encoded PNG/JPEG/WEBP")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        data = fetch_url_image(text, settings, what)
    else:
        data = base64_payload(text, what)
    lim = settings.limits
    return open_image(data, what, max_bytes=lim.max_body_bytes, max_pixels=lim.image_pixels)


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches: IPv4-mapped, 6to4 (2002::/16), NAT64
    (64:ff9b::/96, 64:ff9b:1::/48), Teredo and the old IPv4-compatible ::a.b.c.d."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    out = [x for x in (ip.ipv4_mapped, ip.sixtofour) if x is not None]
    if ip.teredo:
        out += list(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        out.append(low32)
    return out


def _forbidden_address(ip: Address) -> bool:
    """Not a public unicast address (IPv6 forms that embed an IPv4 address are judged by it)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is that IPv4 address itself
            return _forbidden_address(ip.ipv4_mapped)
        if any(_forbidden_address(v4) for v4 in _embedded_ipv4(ip)):
            return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_link_local
        or ip.is_loopback
        or ip.is_private
        or ip.is_unspecified
    )


def _refused(host: str, address: str) -> BadRequest:
    return BadRequest(f"image URL host '{host}' is a local or private address ({address}); refused")


def _resolve_checked(host: str, port: int, address_ok: Callable[[Address], bool]) -> list[str]:
    """Resolve ``host`` once and refuse it if any address it has is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BadRequest(f"image URL host '{host}' does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    for address in addresses:
        if not address_ok(ipaddress.ip_address(address)):
            raise _refused(host, address)
    return addresses


def _public(ip: Address) -> bool:
    return not _forbidden_address(ip)


def check_url(url: str) -> None:
    """Refuse URLs that point at this machine or a private network."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"image URL '{url}' must be http(s)://host/...")
    _resolve_checked(host, parts.port or (443 if parts.scheme == "https" else 80), _public)


class _URLRefused(Exception):
    def __init__(self, error: BadRequest) -> None:
        super().__init__(error.message)
        self.error = error


def _checked_backend(address_ok: Callable[[Address], bool]) -> Any:
    """An httpcore network backend that resolves a host once, refuses it unless every address is
    allowed, connects to that very address (no second lookup for a rebinding DNS server to
    answer differently) and checks the peer address of the connected socket again."""
    import httpcore

    class CheckedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None, socket_options: Any = None) -> Any:
            try:
                addresses = _resolve_checked(host, port, address_ok)
            except BadRequest as err:
                raise _URLRefused(err) from None
            stream = super().connect_tcp(addresses[0], port, timeout, local_address, socket_options)
            peer = str(stream.get_extra_info("socket").getpeername()[0]).split("%")[0]
            if not address_ok(ipaddress.ip_address(peer)):
                stream.close()
                raise _URLRefused(_refused(host, peer))
            return stream

    return CheckedBackend()


def fetch_url_image(url: str, settings: Settings, what: str,
                    address_ok: Callable[[Address], bool] = _public) -> bytes:
    """Download an image URL, only when ``allow_url_images`` is set, never from local or private
    addresses (checked on the address actually connected), within :data:`URL_DEADLINE_S` for
    the whole download and ``limits.max_body_bytes``; redirects are not followed."""
    if not settings.allow_url_images:
        raise BadRequest(
            f"{what} is a URL; URL images are off (start the server with --allow-url-images "
            "or send the image as base64)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{what} URL must be http(s)://host/...")
    import httpcore

    limit = settings.limits.max_body_bytes
    deadline = time.monotonic() + URL_DEADLINE_S
    timeouts = {"connect": URL_TIMEOUT_S, "read": URL_TIMEOUT_S, "write": URL_TIMEOUT_S, "pool": URL_TIMEOUT_S}
    chunks: list[bytes] = []
    try:
        with httpcore.ConnectionPool(network_backend=_checked_backend(address_ok)) as pool, pool.stream(
            "GET", url, extensions={"timeout": timeouts}
        ) as resp:
            if resp.status != 200:
                raise BadRequest(f"{what} URL answered HTTP {resp.status}")
            size = 0
            for chunk in resp.iter_stream():
                size += len(chunk)
                if size > limit:
                    raise BadRequest(f"{what} URL is larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise BadRequest(f"{what} URL took longer than {URL_DEADLINE_S:.0f} s to download")
                chunks.append(chunk)
    except _URLRefused as refused:
        raise refused.error from None
    except httpcore.TimeoutException:
        raise BadRequest(f"{what} URL timed out (no data for {URL_TIMEOUT_S:.0f} s)") from None
    except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as err:
        raise BadRequest(f"{what} URL could not be fetched: {type(err).__name__}") from None
    return b"".join(chunks)
