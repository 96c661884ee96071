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
- Extra networks of a generation job: each ``<lora:name:w>`` its prompts name and each
  embedding of the front's catalog they use is put in the store by content
  (``models/sha256/<hash>``) and named in the payload's ``networks``; a worker that lacks
  one pulls it into its own model folders (its cache). A LoRA that neither the worker, the
  front nor the store has is skipped as a local job skips it: the engine names it in the
  result's comments and infotext ("Networks not found: x") and the job goes on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.catalog import DEMO_MODELS, EMBEDDING_EXTS, LORA_EXTS
from sdcloud.errors import BadRequest, NotFound
from sdcloud.fleet import protocol as P
from sdcloud.prompt_syntax.extra_networks import mentions
from sdcloud.settings import Settings

log = logging.getLogger(__name__)

CKPT_KINDS = ("ckpt-merge", "ckpt-convert", "ckpt-prune", "ckpt-lora-bake")
TRAIN_KIND = "train-lora"
FOLDERS = {"checkpoint": "Stable-diffusion", "lora": "Lora", "vae": "VAE",
           "embedding": "embeddings"}  # catalog kind -> store folder
NETWORK_TAGS = ("lora", "lyco")  # <lora:...> and <lyco:...> name a LoRA file


def model_key(kind: str, name: str) -> str:
    return f"models/{FOLDERS[kind]}/{name}"


def local_dir(settings: Settings, kind: str) -> Path:
    return {"checkpoint": settings.checkpoints_path, "lora": settings.lora_path, "vae": settings.vae_path,
            "embedding": settings.embeddings_path}[kind]


def content_key(sha256: str) -> str:
    """Where a model file is kept by content in the store."""
    return f"models/sha256/{sha256}"


def prompt_texts(payload: dict[str, Any]) -> list[str]:
    """Every text of a generation job's request (prompts, hires prompts, script values): where
    LoRA tags and embedding names can be."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload.get("request") or {})
    walk(payload.get("script") or {})
    return out


def lora_tags(payload: dict[str, Any]) -> list[str]:
    """The LoRA names of every ``<lora:name:...>`` tag in a generation job's texts."""
    from sdcloud.prompt_syntax.extra_networks import extract_extra_networks

    names: list[str] = []
    for text in prompt_texts(payload):
        if "<" in text:
            names += [n.name.strip() for n in extract_extra_networks(text)[1] if n.kind in NETWORK_TAGS]
    return list(dict.fromkeys(n for n in names if n))


def _plain_name(name: str) -> bool:
    return bool(name) and not name.startswith("/") and not any(p in ("", ".", "..") for p in name.split("/"))


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
                 on_models: Callable[[], None] | None = None, hashes: Any = None) -> None:
        self.settings, self.catalog, self.store = settings, catalog, store
        self.on_models = on_models
        self.hashes = hashes  # checkpoints.hashing.HashCache (None: hash each file when needed)

    def prepare(self, job_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        if kind in P.GENERATION_KINDS:
            networks = self.networks(payload)
            if networks:
                payload["networks"] = networks
            return payload
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

    def networks(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The LoRAs and embeddings of this server that a generation job uses, each put in the
        store by content (once): ``[{kind, tag, name, sha256}]``. A LoRA this server lacks is
        left to the worker (it may hold it; else its engine skips it, as a local job does)."""
        out: list[dict[str, Any]] = []
        for tag in lora_tags(payload):
            try:
                m = self.catalog.resolve("lora", tag)
            except NotFound:
                continue
            out.append(self._by_content("lora", tag, m))
        embeddings = self.catalog.embeddings()
        if embeddings:
            text = " ".join(prompt_texts(payload))
            out += [self._by_content("embedding", m.stem, m) for m in embeddings if mentions(text, m.stem)]
        return out

    def _by_content(self, kind: str, tag: str, m: Any) -> dict[str, Any]:
        if self.hashes is not None:
            sha = self.hashes.get(m.path).sha256
        else:
            from sdcloud.checkpoints.hashing import compute_hashes

            sha = compute_hashes(m.path).sha256
        key = content_key(sha)
        if self.store.size(key) is None:  # once per file: later jobs find it there
            log.info("putting %s %s in the store for the workers (%s)", kind, m.name, key)
            self.store.put(m.path, key)
        return {"kind": kind, "tag": tag, "name": m.name, "sha256": sha}

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
        keys = ([content_key(sha256)] if sha256 else []) + [model_key(kind, name)]
        if self._pull(kind, what, name, name, keys):
            return
        raise NotFound(f"this worker has no {what} '{name}' and the store has none under {' or '.join(keys)}")

    def ensure_networks(self, payload: dict[str, Any]) -> None:
        """Have every LoRA a generation job's prompts name, and the embeddings the front said
        it uses, here: on disk already, or pulled from the store (by content, else by name).
        One found nowhere is only logged: the job goes on as a local job does, the engine
        skipping that LoRA with "Networks not found: x" in the result's comments and infotext
        (a missing embedding's word stays plain text, as on a box without it)."""
        hints = {(n.get("kind"), n.get("tag")): n for n in payload.get("networks") or [] if isinstance(n, dict)}
        wanted = [("lora", tag, hints.get(("lora", tag))) for tag in lora_tags(payload)]
        wanted += [("embedding", tag, hint) for (kind, tag), hint in hints.items()
                   if kind == "embedding" and isinstance(tag, str)]
        for kind, tag, hint in wanted:
            try:
                self.ensure_network(kind, tag, hint)
            except NotFound as err:
                log.warning("%s", err.message)

    def ensure_network(self, kind: str, tag: str, hint: dict[str, Any] | None = None) -> None:
        try:
            self.catalog.resolve(kind, tag)
            return
        except NotFound:
            pass
        what = "LoRA" if kind == "lora" else "embedding"
        exts = LORA_EXTS if kind == "lora" else EMBEDDING_EXTS
        name, keys = f"{tag}.safetensors", []
        if hint and isinstance(hint.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", hint["sha256"]):
            keys.append(content_key(hint["sha256"]))
            if _plain_name(str(hint.get("name") or "")):
                name = str(hint["name"])
        if _plain_name(tag):
            keys += [model_key(kind, tag + ext) for ext in exts]
        if self.store is not None and self._pull(kind, what, tag, name, keys):
            return
        raise NotFound(f"{what} '{tag}' not found: not on this worker, not on the server and not in the store")

    def _pull(self, kind: str, what: str, shown: str, name: str, keys: list[str]) -> bool:
        """Fetch the first of ``keys`` the store has into this worker's ``kind`` folder as ``name``."""
        for key in keys:
            if self.store.size(key) is not None:
                log.info("pulling %s %s from the store (%s)", what, shown, key)
                _get_atomic(self.store, key, local_dir(self.settings, kind).joinpath(*name.split("/")))
                self.catalog.refresh()
                self.on_models()
                return True
        return False

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
