"""Images into the API: base64 / data URL / (opt-in) http(s) URL decoding with the checks a
public server needs (no local or private addresses, size limits). Encoding and the plain
decoding live in ``sdcloud.image_files``."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from sdcloud.errors import BadRequest
from sdcloud.image_files import base64_payload, open_image
from sdcloud.settings import Settings

URL_TIMEOUT_S = 10.0


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
    return open_image(data, what, max_bytes=lim.max_body_bytes, max_pixels=4 * lim.max_width * lim.max_height)


def _forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_link_local
        or ip.is_loopback
        or ip.is_private
        or ip.is_unspecified
    )


def check_url(url: str) -> None:
    """Refuse URLs that point at this machine or a private network."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"image URL '{url}' must be http(s)://host/...")
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        raise BadRequest(f"image URL host '{host}' does not resolve") from None
    addresses = {info[4][0] for info in infos}
    for address in addresses:
        if _forbidden_address(ipaddress.ip_address(address.split("%")[0])):
            raise BadRequest(f"image URL host '{host}' is a local or private address ({address}); refused")


def fetch_url_image(url: str, settings: Settings, what: str) -> bytes:
    """Download an image URL, only when ``allow_url_images`` is set and never from local
    or private addresses (checked before connecting; redirects are not followed)."""
    if not settings.allow_url_images:
        raise BadRequest(
            f"{what} is a URL; URL images are off (start the server with --allow-url-images "
            "or send the image as base64)"
        )
    check_url(url)
    import httpx

    limit = settings.limits.max_body_bytes
    try:
        with httpx.stream("GET", url, timeout=URL_TIMEOUT_S, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise BadRequest(f"{what} URL answered HTTP {resp.status_code}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise BadRequest(f"{what} URL is larger than {limit} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as err:
        raise BadRequest(f"{what} URL could not be fetched: {err}") from None
    return b"".join(chunks)
