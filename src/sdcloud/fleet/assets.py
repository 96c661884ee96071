"""The files a fleet job needs and makes, carried through the store (never through Redis).

Models are stored under the keys ``sdcloud storage push --checkpoints`` and ``models pull``
use: ``models/Stable-diffusion/<name>``, ``models/Lora/<name>``, ``models/VAE/<name>`` (and
``models/sha256/<hash>`` for a checkpoint known by content). A job's own files live under
``fleet/jobs/<id>/`` (``in``, ``out``, ``state``, ``dataset``).

- The front (``FrontAssets.prepare``), before a job is sent: the checkpoint tools' inputs
  (checkpoints, LoRAs, a VAE) and a training run's base model are put in the store when it
  lacks them; a training run's dataset folder is copied to ``fleet/jobs/<id>/dataset/``.
  Names in the payload become the catalog's full names, so every worker resolves them alike.
- The worker (``WorkerAssets``): fetches what a job names that it does not hold, and puts
  the checkpoint or LoRA a job made back under its model key (``outputs``).
- The front again (``FrontAssets.take_models``): fetches those outputs into its own model
  folders, so they appear in its model lists (``/sdapi/v1/sd-models``, ``/sdapi/v1/loras``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.catalog import DEMO_MODELS
from sdcloud.errors import BadRequest, NotFound
from sdcloud.fleet import protocol as P
from sdcloud.settings import Settings

log = logging.getLogger(__name__)

CKPT_KINDS = ("ckpt-merge", "ckpt-convert", "ckpt-prune", "ckpt-lora-bake")
TRAIN_KIND = "train-lora"
FOLDERS = {"checkpoint": "Stable-diffusion", "lora": "Lora", "vae": "VAE"}  # catalog kind -> store folder


def model_key(kind: str, name: str) -> str:
    return f"models/{FOLDERS[kind]}/{name}"


def local_dir(settings: Settings, kind: str) -> Path:
    return {"checkpoint": settings.checkpoints_path, "lora": settings.lora_path, "vae": settings.vae_path}[kind]


def inputs_of(kind: str, payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(catalog kind, payload field, name) of each model file a job reads; ``loras.N`` for a
    LoRA of a bake. Demo models need no file."""
    out: list[tuple[str, str, str]] = []
    if kind in CKPT_KINDS:
        for field in ("a", "b", "c", "model"):
            if payload.get(field):
                out.append(("checkpoint", field, payload[field]))
        if payload.get("bake_vae"):
            out.append(("vae", "bake_vae", payload["bake_vae"]))
        for i, item in enumerate(payload.get("loras") or []):
            out.append(("lora", f"loras.{i}", item["name"]))
    elif kind == TRAIN_KIND and payload.get("model"):
        out.append(("checkpoint", "model", payload["model"]))
    return [x for x in out if not (x[0] == "checkpoint" and x[2] in DEMO_MODELS)]


def _set(payload: dict[str, Any], field: str, value: str) -> None:
    if field.startswith("loras."):
        payload["loras"][int(field.split(".")[1])]["name"] = value
    else:
        payload[field] = value


def _get_atomic(store: Any, key: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    store.get(key, tmp)
    os.replace(tmp, dest)


class FrontAssets:
    """The front's side: inputs into the store before a job is sent, outputs back after."""

    def __init__(self, settings: Settings, catalog: Any, store: Any,
                 on_models: Callable[[], None] | None = None) -> None:
        self.settings, self.catalog, self.store = settings, catalog, store
        self.on_models = on_models

    def prepare(self, job_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        if payload.get("loras"):
            payload["loras"] = [dict(x) for x in payload["loras"]]
        for cat_kind, field, name in inputs_of(kind, payload):
            m = self.catalog.resolve(cat_kind, name)  # NotFound: the API already checked, a race at most
            _set(payload, field, m.name)
            key = model_key(cat_kind, m.name)
            if self.store.size(key) is None:  # once per model: later jobs find it there
                log.info("putting %s %s in the store for the workers (%s)", cat_kind, m.name, key)
                self.store.put(m.path, key)
        if kind == TRAIN_KIND:
            for field in ("dataset", "reg_dir"):
                if payload.get(field):
                    payload[f"{field}_key"] = self._put_folder(Path(payload[field]),
                                                               P.job_key(job_id, field.replace("_dir", "")))
        return payload

    def _put_folder(self, folder: Path, prefix: str) -> str:
        if not folder.is_dir():
            raise NotFound(f"dataset folder '{folder.name}' is gone")
        items = [(p, f"{prefix}/{p.relative_to(folder).as_posix()}") for p in sorted(folder.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        if not items:
            raise BadRequest(f"dataset folder '{folder.name}' is empty")
        self.store.put_many(items)
        return prefix

    def take_models(self, models: list[dict[str, Any]]) -> None:
        """Fetch the checkpoints/LoRAs a worker made into this server's model folders."""
        for m in models:
            kind = {v: k for k, v in FOLDERS.items()}.get(m.get("folder", ""))
            name = str(m.get("name", ""))
            if kind is None or not name or "/" in name or name.startswith("."):
                log.warning("ignored a model output named %r in %r", name, m.get("folder"))
                continue
            _get_atomic(self.store, m["key"], local_dir(self.settings, kind) / name)
        if models and self.on_models is not None:
            self.on_models()


class WorkerAssets:
    """The worker's side: fetch a job's inputs it lacks, put its model outputs in the store."""

    def __init__(self, settings: Settings, catalog: Any, store: Any,
                 on_models: Callable[[], None] | None = None) -> None:
        self.settings, self.catalog, self.store = settings, catalog, store
        self.on_models = on_models or (lambda: None)

    def ensure(self, kind: str, name: str, sha256: str | None = None) -> None:
        """Have the model file ``name`` here: on disk already, or fetched from the store."""
        self.catalog.refresh()
        try:
            self.catalog.resolve(kind, name)
            return
        except NotFound:
            pass
        what = {"checkpoint": "model", "lora": "LoRA", "vae": "VAE"}[kind]
        if self.store is None:
            raise NotFound(f"this worker has no {what} '{name}' and no store to pull it from")
        keys = ([f"models/sha256/{sha256}"] if sha256 else []) + [model_key(kind, name)]
        for key in keys:
            if self.store.size(key) is not None:
                log.info("pulling %s %s from the store (%s)", what, name, key)
                _get_atomic(self.store, key, local_dir(self.settings, kind).joinpath(*name.split("/")))
                self.catalog.refresh()
                self.on_models()
                return
        raise NotFound(f"this worker has no {what} '{name}' and the store has none under {' or '.join(keys)}")

    def fetch_inputs(self, kind: str, payload: dict[str, Any], work: Path) -> None:
        """Everything ``kind`` reads, here; a training dataset lands in ``work`` (the payload
        then names that folder)."""
        for cat_kind, _field, name in inputs_of(kind, payload):
            self.ensure(cat_kind, name)
        if kind == TRAIN_KIND:
            for field in ("dataset", "reg_dir"):
                prefix = payload.get(f"{field}_key")
                if prefix:
                    payload[field] = str(self.fetch_folder(prefix, work / field))

    def fetch_folder(self, prefix: str, dest: Path) -> Path:
        keys = self.store.list(prefix)
        if not keys:
            raise NotFound(f"the store has no files under {prefix}")
        for key in keys:
            rel = key[len(prefix):].strip("/")
            if not rel or any(p in ("", ".", "..") for p in rel.split("/")):
                continue
            _get_atomic(self.store, key, dest.joinpath(*rel.split("/")))
        return dest

    def outputs(self, kind: str, payload: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
        """Put the checkpoint or LoRA a job made into the store; the ``models`` of its result event."""
        made: list[tuple[str, str]] = []
        if kind in CKPT_KINDS and result.get("output"):
            made.append(("checkpoint", result["output"]))
        elif kind == TRAIN_KIND and result.get("lora"):
            made.append(("checkpoint" if payload.get("mode") == "dreambooth" else "lora", result["lora"]))
        out = []
        for cat_kind, name in made:
            path = local_dir(self.settings, cat_kind) / name
            key = model_key(cat_kind, name)
            self.store.put(path, key)
            out.append({"folder": FOLDERS[cat_kind], "name": name, "key": key})
        return out
