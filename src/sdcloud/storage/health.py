"""Start-up checks: open and verify the configured store (one line on failure), and warn when
outputs or a folder store sit on a platform's ephemeral disk."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdcloud.storage.base import Store
from sdcloud.storage.stores import open_store, parse_store_url


def open_checked_store(settings: Any) -> Store | None:
    """The store from ``settings.store`` after ``check()``; None when no store is set.

    Raises ``BadRequest`` (bad URL) or ``StoreError`` (unreachable, wrong credentials, bucket or
    repo missing, unmounted drive) with one line saying what to fix, so ``serve`` fails at
    start-up rather than after the first image.
    """
    if not settings.store:
        return None
    store = open_store(settings.store, endpoint=settings.store_endpoint)
    store.check()
    return store


def persistence_warnings(settings: Any, *, env: Mapping[str, str] | None = None,
                         root: Path | str = "/") -> list[str]:
    """Warnings for images that would be lost with the machine (empty when all is well)."""
    from sdcloud.cloud.platforms import detect, on_persistent_storage

    det = detect(env, root)
    name = det.profile.name
    place = next(iter(det.persistent_present or det.profile.persistent), None)
    suggest = f"{place}/sdcloud" if place and "<" not in place else "hf://<user>/<repo> or s3://<bucket>"
    out: list[str] = []
    if not settings.store:
        if on_persistent_storage(Path(settings.outputs_path), det, root) is False:
            out.append(f"outputs folder {settings.outputs_path} is on {name}'s ephemeral disk and no store "
                       f"is set: images are lost with the machine; set --store {suggest}")
        return out
    url = parse_store_url(settings.store)
    if url.scheme == "file" and on_persistent_storage(Path(url.location), det, root) is False:
        out.append(f"store {url.location} is on {name}'s ephemeral disk, so it vanishes with the "
                   f"machine; point --store at persistent storage such as {suggest}")
    return out
