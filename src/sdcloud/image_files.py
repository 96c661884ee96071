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


def open_image(data: bytes, what: str = "image", *, max_bytes: int | None = None,
               max_pixels: int | None = None) -> Any:
    """A fully loaded, EXIF-transposed PIL image from encoded bytes; ``BadRequest`` with a
    message for anything that is not a readable image or is over the limits (checked before
    the pixels are decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if max_bytes is not None and len(data) > max_bytes:
        raise BadRequest(f"{what} is larger than {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise BadRequest(
                    f"{what} is {img.width}x{img.height}; at most {max_pixels} pixels are accepted"
                )
            img.load()
            return ImageOps.exif_transpose(img)
    except BadRequest:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(f"{what} is not a readable image (PNG, JPEG or WEBP, base64-encoded)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
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


def read_image_infotext(image: Any) -> str | None:
    """The A1111 ``parameters`` text of an image (PIL image, path or bytes), or None.

    Looks where A1111 does: the PNG ``parameters`` text chunk, then the EXIF UserComment
    (JPEG/WEBP), then a GIF comment.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (bytes, bytearray, str, os.PathLike)):
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        try:
            with Image.open(source) as img:
                return read_image_infotext(img)
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
