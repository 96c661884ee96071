"""Session push/pull: what a fresh machine needs to be back in shape with one command.

Copied as files: settings and presets (``styles.csv``, ``config.json``, ``ui-config.json``,
``sdcloud.toml``, API options, where each model came from), LoRAs, embeddings and VAEs.
Checkpoints are big: their list goes into ``session/manifest.json``; the files themselves are
uploaded only with ``--checkpoints`` and come back from the store or from their recorded
source URL, as the user chooses.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.errors import SdcloudError
from sdcloud.storage.base import Store, join_key
from sdcloud.storage.model_sources import load_sources

SESSION = "session"
CHECKPOINTS = "models/Stable-diffusion"
CONFIG_FILES = ("styles.csv", "config.json", "ui-config.json", "sdcloud.toml", "config.toml",
                ".sdcloud/options.json", ".sdcloud/model_sources.json")
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

Report = Callable[[str], None]


def _small_folders(settings: Any) -> dict[str, Path]:
    return {"Lora": settings.lora_path, "embeddings": settings.embeddings_path, "VAE": settings.vae_path,
            "compile-cache": settings.state_path / "compile-cache"}  # torch.compile's artifacts


def _hashed_files(settings: Any) -> dict[str, Path]:
    """Model files whose hashes travel in the manifest, by a key that is the same on every machine."""
    folders = {"checkpoints": settings.checkpoints_path, "Lora": settings.lora_path, "VAE": settings.vae_path,
               "embeddings": settings.embeddings_path}
    return {f"{label}/{p.relative_to(folder).as_posix()}": p for label, folder in folders.items()
            for p in _files(folder) if p.name.lower().endswith(MODEL_EXTS)}


def _hash_cache(settings: Any) -> Any:
    from sdcloud.checkpoints.hashing import HashCache

    return HashCache(settings.state_path / "hashes.json")


def known_hashes(settings: Any) -> dict[str, dict[str, Any]]:
    """The hashes already computed for this machine's model files (none is computed here)."""
    from dataclasses import asdict

    cache = _hash_cache(settings)
    out = {}
    for key, path in _hashed_files(settings).items():
        hashes = cache.get(path, compute=False)
        if hashes is not None:
            out[key] = {"size": path.stat().st_size, "hashes": asdict(hashes)}
    return out


def restore_hashes(settings: Any, manifest: dict[str, Any]) -> int:
    """Give files that have the size the manifest recorded their hashes, so a new machine does
    not read gigabytes to hash them again; returns how many."""
    from sdcloud.checkpoints.hashing import FileHashes

    recorded = manifest.get("hashes") or {}
    if not recorded:
        return 0
    cache = _hash_cache(settings)
    restored = 0
    for key, path in _hashed_files(settings).items():
        entry = recorded.get(key)
        if not entry or path.stat().st_size != entry.get("size") or cache.get(path, compute=False):
            continue
        try:
            cache.put(path, FileHashes(**entry["hashes"]))
        except (TypeError, OSError):
            continue
        restored += 1
    return restored


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def session_files(settings: Any) -> list[tuple[Path, str]]:
    """(local file, store key) for everything a session push copies (checkpoints excluded)."""
    items = [(settings.data_dir / rel, join_key(SESSION, "config", rel)) for rel in CONFIG_FILES
             if (settings.data_dir / rel).is_file()]
    for label, folder in _small_folders(settings).items():
        items += [(p, join_key(SESSION, label, p.relative_to(folder).as_posix())) for p in _files(folder)]
    return items


def push_session(settings: Any, store: Store, *, checkpoints: bool = False,
                 report: Report = print) -> dict[str, int]:
    """Copy the session to ``store``; files already there with the same size are skipped
    (config files are always copied, they change without changing size)."""
    uploaded = skipped = 0
    sources = load_sources(settings.state_path)
    todo = session_files(settings)
    ckpts = _files(settings.checkpoints_path)
    if checkpoints:
        todo += [(p, join_key(CHECKPOINTS, p.relative_to(settings.checkpoints_path).as_posix()))
                 for p in ckpts if p.name.lower().endswith(MODEL_EXTS)]
    for local, key in todo:
        is_config = key.startswith(f"{SESSION}/config/")
        if not is_config and store.size(key) == local.stat().st_size:
            skipped += 1
            continue
        report(f"upload {key} ({local.stat().st_size / 1e6:,.1f} MB)")
        store.put(local, key)
        uploaded += 1
    manifest = {
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checkpoints": [
            {"name": p.relative_to(settings.checkpoints_path).as_posix(), "size": p.stat().st_size,
             **_known_source(sources, p.name)}
            for p in ckpts if p.name.lower().endswith(MODEL_EXTS)],
        "hashes": known_hashes(settings),
    }
    with tempfile.TemporaryDirectory() as tmp:
        mpath = Path(tmp) / "manifest.json"
        mpath.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        store.put(mpath, join_key(SESSION, "manifest.json"))
    return {"uploaded": uploaded, "skipped": skipped, "checkpoints_listed": len(manifest["checkpoints"])}


def pull_session(settings: Any, store: Store, *, checkpoints: str = "auto", force: bool = False,
                 report: Report = print, progress: bool = True) -> dict[str, Any]:
    """Restore a session. Local files win unless ``force``; ``checkpoints`` is
    ``auto`` (store copy, else source URL) | ``store`` | ``source`` | ``none``."""
    fetched = skipped = 0
    targets = {"config": settings.data_dir, **_small_folders(settings)}
    for key in store.list(SESSION):
        parts = key.split("/", 2)
        if len(parts) < 3 or parts[1] not in targets:
            continue
        dest = targets[parts[1]].joinpath(*parts[2].split("/"))
        if dest.exists() and not force:
            skipped += 1
            continue
        report(f"restore {dest}")
        store.get(key, dest)
        fetched += 1
    missing: list[str] = []
    ckpt_fetched = 0
    manifest = _read_manifest(store)
    if checkpoints != "none":
        ckpt_fetched, missing = _pull_checkpoints(settings, store, checkpoints, report, progress, manifest)
    hashes = restore_hashes(settings, manifest)
    return {"restored": fetched, "skipped": skipped, "checkpoints_fetched": ckpt_fetched,
            "checkpoints_missing": missing, "hashes_restored": hashes}


def _known_source(sources: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    info = sources.get(f"checkpoint/{name}", {})
    return {k: info[k] for k in ("source", "sha256") if k in info}


def _read_manifest(store: Store) -> dict[str, Any]:
    if store.size(join_key(SESSION, "manifest.json")) is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        store.get(join_key(SESSION, "manifest.json"), path)
        return json.loads(path.read_text(encoding="utf-8"))


def _pull_checkpoints(settings: Any, store: Store, how: str, report: Report,
                      progress: bool, manifest: dict[str, Any]) -> tuple[int, list[str]]:
    from sdcloud.storage.model_pull import pull

    fetched, missing = 0, []
    for entry in manifest.get("checkpoints", []):
        name = entry["name"]
        dest = settings.checkpoints_path.joinpath(*name.split("/"))
        if dest.exists():
            continue
        key = join_key(CHECKPOINTS, name)
        try:
            if how in ("auto", "store") and store.size(key) is not None:
                report(f"fetch checkpoint {name} from the store")
                store.get(key, dest)
            elif how in ("auto", "source") and entry.get("source"):
                report(f"fetch checkpoint {name} from {entry['source']}")
                pull(entry["source"], settings, kind="checkpoint", progress=progress)
            else:
                missing.append(name)
                continue
        except SdcloudError as exc:
            report(f"could not fetch {name}: {exc}")
            missing.append(name)
            continue
        fetched += 1
    return fetched, missing
