"""Images in and out of the API: base64 / data URL / (opt-in) http(s) URL decoding with the
checks a public server needs, and raw-base64 encoding with the infotext kept."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import warnings
from typing import Any
from urllib.parse import urlsplit

from sdcloud.errors import BadRequest
from sdcloud.jobs.generation import image_bytes
from sdcloud.settings import Settings

URL_TIMEOUT_S = 10.0


def decode_image(text: str, settings: Settings, what: str = "image") -> Any:
    """A PIL image (EXIF-transposed, fully loaded) from what A1111 clients send."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} is empty; send a base64-encoded PNG/JPEG/WEBP")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        data = fetch_url_image(text, settings, what)
    else:
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{what} is not valid base64") from None
    return open_image(data, settings, what)


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
"""What a client may send: the formats A1111 users send; Pillow's other decoders (TIFF, PSD,
ICO, ...) are attack surface with no use here."""


def _bomb_filter() -> None:
    """Pillow's DecompressionBombWarning is an error here (a process-wide filter, set once)."""
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def open_image(data: bytes, settings: Settings, what: str = "image") -> Any:
    """A fully loaded, EXIF-transposed PIL image from client bytes. The pixel count is checked
    from the header, before any pixel memory is allocated; text chunks are bounded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from sdcloud.infotext import bound_pillow_text, text_chunks_too_large

    if len(data) > settings.limits.max_body_bytes:
        raise BadRequest(f"{what} is larger than {settings.limits.max_body_bytes} bytes")
    max_pixels = settings.limits.image_pixels
    too_many = (
        f"{what} has more than {max_pixels} pixels (setting limits.max_image_pixels); "
        "send a smaller image"
    )
    bound_pillow_text()
    _bomb_filter()
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if img.width * img.height > max_pixels:
            raise BadRequest(
                f"{what} is {img.width}x{img.height} = {img.width * img.height} pixels; at most "
                f"{max_pixels} are accepted (setting limits.max_image_pixels)"
            )
        img.load()
        return ImageOps.exif_transpose(img)
    except BadRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(too_many) from None
    except UnidentifiedImageError:
        raise BadRequest(
            f"{what} is not a readable image ({', '.join(IMAGE_FORMATS)}, base64-encoded)"
        ) from None
    except ValueError as err:
        if "text" in str(err).lower() or "MAX_TEXT" in str(err):
            raise text_chunks_too_large(what) from None
        raise BadRequest(f"{what} is a broken image: {err}") from None
    except (OSError, SyntaxError, EOFError, MemoryError) as err:
        raise BadRequest(f"{what} is a broken image: {err}") from None


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


def encode_image(img: Any, fmt: str = "png", jpeg_quality: int = 80) -> str:
    """Raw base64 (no ``data:`` prefix) of ``img`` in ``fmt``; the ``parameters`` infotext goes into
    a PNG text chunk or, for JPEG/WEBP, the EXIF UserComment, as A1111 does."""
    return base64.b64encode(image_bytes(img, fmt, jpeg_quality)).decode("ascii")
