"""Image files: encode (PNG/JPEG/WEBP with the infotext where A1111 puts it), decode (bytes,
raw base64 or ``data:`` URL, with size limits), read the infotext back, and write a PNG
atomically (temp name + fsync + rename).

Every place that turns an image into bytes or bytes into an image goes through here: the job
runner, the outputs folder, the API (``api/image_input.py`` adds URL fetching on top) and the
UI. PIL is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdcloud.durable import atomic_write
from sdcloud.errors import BadRequest, CorruptFile
from sdcloud.infotext import MAX_INFOTEXT_CHARS, check_infotext_size

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo



# ----------------------------------------------------------------------------- encode


def image_bytes(img: Any, fmt: str = "png", jpeg_quality: int = 80) -> bytes:
    """``img`` encoded as PNG/JPEG/WEBP with its ``parameters`` infotext kept where A1111 puts
    it: a PNG text chunk (other text items too) or the EXIF UserComment."""
    text = img.info.get("parameters") if isinstance(img.info.get("parameters"), str) else None
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo

        info = pnginfo_for(text) if text else PngInfo()
        for key, value in img.info.items():
            if key != "parameters" and isinstance(key, str) and isinstance(value, str):
                info.add_text(key, value)
        img.save(buf, format="PNG", pnginfo=info)
    else:
        kwargs: dict[str, Any] = {"quality": jpeg_quality}
        if text:
            kwargs["exif"] = exif_for(text)
        rgb = img.convert("RGB") if img.mode not in ("RGB", "L") else img
        rgb.save(buf, format="JPEG" if fmt in ("jpg", "jpeg") else "WEBP", **kwargs)
    return buf.getvalue()


def encode_image(img: Any, fmt: str = "png", jpeg_quality: int = 80) -> str:
    """Raw base64 (no ``data:`` prefix) of ``img`` in ``fmt``, the form A1111's API sends and
    takes; the ``parameters`` infotext goes where :func:`image_bytes` puts it."""
    return base64.b64encode(image_bytes(img, fmt, jpeg_quality)).decode("ascii")


def write_png_atomic(image: Any, path: Path, infotext: str | None) -> None:
    """Save a PNG (with its ``parameters`` chunk) via temp file + fsync + rename."""
    with atomic_write(path) as fh:
        image.save(fh, format="PNG", pnginfo=pnginfo_for(infotext) if infotext else None)


# ----------------------------------------------------------------------------- decode


def base64_payload(text: str, what: str = "image") -> bytes:
    """The bytes of a raw base64 string or a ``data:`` URL (``BadRequest`` if it is neither)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} is empty; send a base64-encoded PNG/JPEG/WEBP")
    text = text.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
"""What is decoded: the formats A1111 users send; Pillow's other decoders (TIFF, PSD, ICO, ...)
are attack surface with no use here."""


def _bomb_filter() -> None:
    """Pillow's DecompressionBombWarning is an error here (a process-wide filter; idempotent)."""
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def open_image(data: bytes, what: str = "image", *, max_bytes: int | None = None,
               max_pixels: int | None = None) -> Any:
    """A fully loaded, EXIF-transposed PIL image from encoded bytes; ``BadRequest`` with a
    message for anything that is not a readable image or is over the limits. The pixel count
    is checked from the header, before pixel memory is allocated; text chunks are bounded
    (:func:`bound_pillow_text`) before they are inflated."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if max_bytes is not None and len(data) > max_bytes:
        raise BadRequest(f"{what} is larger than {max_bytes} bytes")
    setting = "limits.max_image_pixels"
    bound_pillow_text()
    _bomb_filter()
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise BadRequest(
                f"{what} is {img.width}x{img.height} = {img.width * img.height} pixels; at most "
                f"{max_pixels} are accepted (setting {setting})"
            )
        img.load()
        return ImageOps.exif_transpose(img)
    except BadRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
        raise BadRequest(f"{what} has more than {limit} pixels (setting {setting}); send a smaller image") from None
    except UnidentifiedImageError:
        raise BadRequest(f"{what} is not a readable image ({', '.join(IMAGE_FORMATS)}, base64-encoded)") from None
    except ValueError as err:
        if "text" in str(err).lower():  # Pillow's MAX_TEXT_CHUNK / MAX_TEXT_MEMORY
            raise text_chunks_too_large(what) from None
        raise BadRequest(f"{what} is a broken image: {err}") from None
    except (OSError, SyntaxError, EOFError, MemoryError) as err:
        raise BadRequest(f"{what} is a broken image: {err}") from None


def decode_base64(text: str, what: str = "image") -> Any:
    """A PIL image from raw base64 or a ``data:`` URL (no size limits: for images this
    program made itself, such as the API's ``current_image`` preview)."""
    return open_image(base64_payload(text, what), what)


def load_image(path: Path) -> Any:
    """A PIL image read fully from ``path`` (the file is closed again at once)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.copy()


# ----------------------------------------------------------------------------- infotext in images

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\0"
_USER_COMMENT_CODECS = {b"ASCII\0\0\0": "ascii", b"JIS\0\0\0\0\0": "shift_jis", _UNICODE_PREFIX: "utf_16_be"}


def pnginfo_for(text: str) -> PngInfo:
    """PNG text chunks holding ``parameters``: tEXt when the text is Latin-1, else iTXt (UTF-8)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


def exif_for(text: str) -> bytes:
    """EXIF bytes for JPEG/WEBP ``save(exif=...)``: UserComment = ``UNICODE\\0`` + UTF-16BE, as A1111.

    Written by hand (big-endian TIFF, as piexif writes it) because Pillow would store the
    comment as BYTE, which A1111's piexif reader cannot decode; UserComment is UNDEFINED.
    """
    comment = _UNICODE_PREFIX + text.encode("utf_16_be")
    exif_ifd = 8 + 2 + 12 + 4  # after the TIFF header and IFD0 (one entry)
    data_at = exif_ifd + 2 + 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", _EXIF_IFD, 4, 1, exif_ifd) + struct.pack(">I", 0)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", _USER_COMMENT, 7, len(comment), data_at)
    tiff += struct.pack(">I", 0) + comment
    return b"Exif\x00\x00" + tiff


def _decode_user_comment(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    codec = _USER_COMMENT_CODECS.get(data[:8])
    if codec is None:
        return data.decode("utf8", errors="ignore")
    return data[8:].decode(codec, errors="replace")


PNG_TEXT_CHUNK_BYTES = 4 * MAX_INFOTEXT_CHARS
"""Pillow's ``MAX_TEXT_CHUNK`` here: a zTXt/iTXt chunk stops inflating past this many bytes (the
UTF-8 of the longest text we read), so a tiny compressed chunk cannot expand to megabytes."""
PNG_TEXT_MEMORY_BYTES = 16 * PNG_TEXT_CHUNK_BYTES
"""Pillow's ``MAX_TEXT_MEMORY`` here: all text chunks of one PNG together."""


def text_chunks_too_large(what: str) -> BadRequest:
    return BadRequest(
        f"{what} has a text chunk over {PNG_TEXT_CHUNK_BYTES} bytes (or over {PNG_TEXT_MEMORY_BYTES} "
        "bytes of text in all); A1111 parameters are a few KB (see docs/security.md)"
    )


def bound_pillow_text() -> None:
    """Lower Pillow's PNG text limits (process-wide module settings; idempotent) before an
    image is opened."""
    from PIL import PngImagePlugin

    PngImagePlugin.MAX_TEXT_CHUNK = PNG_TEXT_CHUNK_BYTES
    PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_MEMORY_BYTES


def read_image_infotext(image: Any) -> str | None:
    """The A1111 ``parameters`` text of an image (PIL image, path or bytes), or None.

    Looks where A1111 does: the PNG ``parameters`` text chunk, then the EXIF UserComment
    (JPEG/WEBP), then a GIF comment. Text over :data:`MAX_INFOTEXT_CHARS` is a ``BadRequest``.
    """
    text = _read_image_infotext(image)
    if text is not None:
        check_infotext_size(text, "the image's parameters text")
    return text


def _read_image_infotext(image: Any) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (bytes, bytearray, str, os.PathLike)):
        bound_pillow_text()
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        try:
            with Image.open(source) as img:
                return _read_image_infotext(img)
        except ValueError:  # Pillow's text-chunk limits
            raise text_chunks_too_large("the image") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise CorruptFile(f"cannot read the image: {exc}; send a PNG, JPEG or WEBP file") from None

    text = image.info.get("parameters")
    if isinstance(text, str):
        return str(text)
    comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if comment:
        return _decode_user_comment(comment) or None
    gif_comment = image.info.get("comment")
    if isinstance(gif_comment, bytes):
        return gif_comment.decode("utf8", errors="replace") or None
    return None
