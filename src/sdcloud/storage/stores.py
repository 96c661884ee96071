"""Store URLs: parse ``--store`` / ``SDCLOUD_STORE`` and open the matching backend.

Accepted forms (one clear error for anything else):

* a folder path: ``/content/drive/MyDrive/sd``, ``/storage/sd``, ``/workspace/sd``, ``file:///x``
* ``hf://<user>/<repo>[/prefix]`` (a model repo) or ``hf://datasets/<user>/<repo>[/prefix]``
* ``s3://<bucket>[/prefix]`` with ``--store-endpoint`` for S3-compatible services
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sdcloud.errors import BadRequest
from sdcloud.storage.base import Store

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

FORMS = "a folder path, hf://<user>/<repo>, hf://datasets/<user>/<repo> or s3://<bucket>/<prefix>"


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. ``location`` is a folder, an ``owner/repo`` id or a bucket."""

    scheme: str  # file | hf | s3
    location: str
    prefix: str = ""
    repo_type: str = "model"


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_CREDENTIAL_SETTINGS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "hf": "HF_TOKEN (or 'huggingface-cli login')",
}


def redact_url(url: str) -> str:
    """``url`` safe to show: user:password before ``@`` becomes ``***`` and a query string
    ``?***`` (``s3://key:secret@bucket/p`` -> ``s3://***@bucket/p``)."""
    text = _USERINFO.sub(r"\1***@", url.strip())
    base, sep, _query = text.partition("?")
    return f"{base}?***" if sep else base


def parse_store_url(url: str) -> StoreURL:
    """Parse a store URL or raise ``BadRequest`` naming the accepted forms. Credentials in
    the URL (``user:pass@``, ``?secret=``) are refused with the setting they belong in;
    messages show the URL redacted."""
    text = url.strip()
    if not text:
        raise BadRequest(f"empty store URL; use {FORMS}")
    m = _SCHEME.match(text)
    if not m:
        return StoreURL("file", str(Path(text).expanduser().absolute()))
    scheme = m.group(1).lower()
    rest = text[m.end():]
    shown = redact_url(text)
    url = shown  # every message below shows the redacted form
    if scheme in _CREDENTIAL_SETTINGS and (_USERINFO.match(text) or "?" in rest or "#" in rest):
        raise BadRequest(
            f"store URL {shown!r}: credentials or options do not go in the URL; set "
            f"{_CREDENTIAL_SETTINGS[scheme]} in the environment"
            + (" and --store-endpoint for the service's address" if scheme == "s3" else "")
        )
    if scheme == "file":
        if not rest.startswith("/"):
            raise BadRequest(f"store URL {url!r}: file URLs need an absolute path (file:///path)")
        return StoreURL("file", rest)
    if scheme == "hf":
        return _parse_hf(url, rest)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise BadRequest(f"store URL {url!r}: '{bucket}' is not a valid bucket name")
        return StoreURL("s3", bucket, prefix.strip("/"))
    raise BadRequest(f"unknown store scheme '{scheme}://' in {url!r}; use {FORMS}")


def _parse_hf(url: str, rest: str) -> StoreURL:
    parts = [p for p in rest.split("/") if p]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "models", "spaces"):
        if parts[0] == "spaces":
            raise BadRequest(f"store URL {url!r}: a Space is not a store; use a model or dataset repo")
        repo_type = parts.pop(0)[:-1]
    if len(parts) < 2 or not all(_HF_NAME.match(p) for p in parts[:2]):
        raise BadRequest(f"store URL {url!r}: expected hf://<user>/<repo> or hf://datasets/<user>/<repo>")
    return StoreURL("hf", f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), repo_type)


def open_store(url: str, endpoint: str | None = None) -> Store:
    """The backend for ``url`` (nothing contacted yet; call ``check()`` at start-up)."""
    parsed = parse_store_url(url)
    if parsed.scheme == "file":
        from sdcloud.storage.local import LocalStore

        return LocalStore(Path(parsed.location))
    if parsed.scheme == "s3":
        from sdcloud.storage.s3 import S3Store

        return S3Store(parsed.location, parsed.prefix, endpoint=endpoint)
    from sdcloud.storage.hf import HubStore

    return HubStore(parsed.location, repo_type=parsed.repo_type, prefix=parsed.prefix, endpoint=endpoint)
