"""The resumable training state: local generations written atomically, pushed through an outbox,
pulled back from the store on a fresh box.

Layout (local under ``<data dir>/.sdcloud/train/<name>/``, on the store under ``train/<name>/``)::

    step-000200/lora.safetensors   peft LoRA tensors (exact fp32 values)
    step-000200/trainer.pt         optimizer, LR scheduler, grad scaler, RNG states, data order
    step-000200/meta.json          step, fingerprint of model/options/dataset, sha256 of both files

A generation is written to ``step-N.tmp``, fsync'd and renamed, so a folder named ``step-N`` is
always complete. ``meta.json`` is queued last, so on the store a generation with ``meta.json`` is
complete too (the outbox uploads in order). ``trainer.pt`` is read with ``weights_only=True``:
plain tensors and containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.durable import fsync_dir
from sdcloud.errors import BadRequest, CorruptFile, NotFound
from sdcloud.storage.base import Store, join_key
from sdcloud.storage.outbox import Outbox

log = logging.getLogger("sdcloud.training")

_GEN = re.compile(r"^step-(\d{6,})$")
FILES = ("lora.safetensors", "trainer.pt", "meta.json")
KEEP_LOCAL = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Generation:
    step: int
    path: Path

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptFile(f"training state {self.path}: meta.json unreadable ({exc})") from None


class StateOutbox(Outbox):
    """The outbox, keyed ``train/<name>/...`` relative to the training state root."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.explicit: dict[str, str] = {}  # absolute path -> store key, for files outside the state root

    def key_for(self, path: Path) -> str:  # noqa: D102
        assert self.root is not None
        named = self.explicit.get(str(Path(path).absolute()))
        if named:
            return named
        return join_key("train", Path(path).absolute().relative_to(self.root.absolute()).as_posix())


class StateDir:
    """One run's state folder (``root/<name>``), optionally mirrored to a store."""

    def __init__(self, root: Path, name: str, store: Store | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.dir = self.root / name
        self.store = store
        self.outbox: StateOutbox | None = None
        if self.dir.is_dir():  # half-written generations of a run killed while saving
            for stale in self.dir.glob(".step-*"):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(self.root / f".{name}.deleting", ignore_errors=True)  # a clear() cut off
        if store is not None:
            self.outbox = StateOutbox(self.root / ".outbox", store, root=self.root, backoff=(0.5, 30.0), poll=1.0)
            self.outbox.start()

    # -- local -----------------------------------------------------------------------------
    def generations(self) -> list[Generation]:
        if not self.dir.is_dir():
            return []
        gens = [Generation(int(m.group(1)), p) for p in self.dir.iterdir()
                if p.is_dir() and (m := _GEN.match(p.name)) and (p / "meta.json").is_file()]
        return sorted(gens, key=lambda g: g.step)

    def latest(self) -> Generation | None:
        gens = self.generations()
        return gens[-1] if gens else None

    def save(self, step: int, lora: dict[str, Any], trainer: dict[str, Any], meta: dict[str, Any]) -> Generation:
        """Write generation ``step`` atomically and queue it for the store."""
        import torch
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"step-{step:06d}"
        tmp = self.dir / f".step-{step:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
        torch.save(trainer, tmp / "trainer.pt")
        if delay := float(os.environ.get("SDCLOUD_TEST_TRAIN_SAVE_DELAY", "0") or 0):
            time.sleep(delay)  # tests: a window to kill the process in the middle of a save
        meta = dict(meta, step=step, files={f: _sha256(tmp / f) for f in FILES[:2]})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        for f in FILES:
            _fsync(tmp / f)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(self.dir)
        if self.outbox is not None:
            for f in FILES:  # meta.json last: on the store it marks a complete generation
                self.outbox.add(final / f)
        for old in self.generations()[:-KEEP_LOCAL]:
            shutil.rmtree(old.path, ignore_errors=True)
        return Generation(step, final)

    def load(self, gen: Generation) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(LoRA tensors, trainer state, meta) of a generation, checked against its checksums."""
        import torch
        from safetensors.torch import load_file

        meta = gen.meta()
        for f, digest in meta.get("files", {}).items():
            if not (gen.path / f).is_file() or _sha256(gen.path / f) != digest:
                raise CorruptFile(f"training state {gen.path}: {f} is missing or damaged; delete the folder to "
                                  "resume from the one before")
        lora = load_file(str(gen.path / "lora.safetensors"))
        try:
            trainer = torch.load(gen.path / "trainer.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a damaged/unsafe file
            raise CorruptFile(f"training state {gen.path}: trainer.pt could not be read safely ({exc})") from None
        return lora, trainer, meta

    def clear(self) -> None:
        """Forget every local generation (a fresh run with the same name). The folder is renamed
        away first, so a kill in the middle never leaves a generation with files missing."""
        if not self.dir.exists():
            return
        doomed = self.root / f".{self.name}.deleting"
        shutil.rmtree(doomed, ignore_errors=True)
        self.dir.rename(doomed)
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- store -----------------------------------------------------------------------------
    def pull(self) -> Generation | None:
        """Fetch the newest complete generation from the store when it is newer than the local one."""
        if self.store is None:
            return self.latest()
        prefix = join_key("train", self.name)
        complete = stored_steps(self.store, self.name)
        local = self.latest()
        if not complete or (local is not None and local.step >= complete[-1]):
            return local
        step = complete[-1]
        tmp = self.dir / f".step-{step:06d}.pull"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in FILES:
            self.store.get(join_key(prefix, f"step-{step:06d}", f), tmp / f)
        final = self.dir / f"step-{step:06d}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        fsync_dir(self.dir)
        log.info("pulled training state step %d from %s", step, self.store.url)
        return Generation(step, final)

    def publish(self, path: Path, key: str) -> None:
        """Queue another file (the finished LoRA) for the store under ``key``."""
        if self.outbox is not None:
            self.outbox.explicit[str(Path(path).absolute())] = key
            self.outbox.add(path)

    def flush(self, timeout: float = 120.0) -> bool:
        """Wait until every queued generation is on the store."""
        return True if self.outbox is None else self.outbox.wait_idle(timeout)

    def close(self, timeout: float = 120.0) -> bool:
        if self.outbox is None:
            return True
        ok = self.outbox.stop(flush=True, timeout=timeout)
        self.outbox.close()
        self.outbox = None
        return ok


def stored_steps(store: Store, name: str) -> list[int]:
    """The steps of the complete generations of run ``name`` on the store, oldest first."""
    prefix = join_key("train", name)
    steps: dict[int, set[str]] = {}
    for key in store.list(prefix):
        parts = key[len(prefix):].strip("/").split("/")
        if len(parts) == 2 and (m := _GEN.match(parts[0])):
            steps.setdefault(int(m.group(1)), set()).add(parts[1])
    return sorted(s for s, files in steps.items() if set(FILES) <= files)


def has_state(root: Path, name: str, store: Store | None) -> bool:
    """A saved state of run ``name`` here or on the store (a retry on another machine resumes it)."""
    return StateDir(root, name).latest() is not None or (store is not None and bool(stored_steps(store, name)))


def check_resume(meta: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """Refuse a state made with another model, dataset or options (one line naming the first difference)."""
    saved = meta.get("fingerprint", {})
    for key, value in fingerprint.items():
        if saved.get(key) == value:
            continue
        if key == "model":
            what = (f"it was made on the model {_model_label(meta, saved.get(key))}, this run uses "
                    f"{_model_label({}, value)}; resume with the same --model")
        elif key == "dataset":
            what = ("the dataset changed since it was saved (images, captions, sizes or repeats); put the dataset "
                    "back as it was")
        else:
            what = f"{key} was {saved.get(key)!r}, now {value!r}; use the same options"
        raise BadRequest(f"the saved training state does not match this run: {what}, or use --restart instead of "
                         "--resume to start over")


def _model_label(meta: dict[str, Any], key: Any) -> str:
    name = (meta.get("config") or {}).get("model")
    key = str(key)
    short = key[:12] if len(key) == 64 else key  # a sha256, as A1111 shortens it
    return f"'{name}' ({short})" if name and name != key else f"'{short}'"


def require_state(gen: Generation | None, name: str) -> Generation:
    if gen is None:
        raise NotFound(f"no saved training state for '{name}' (locally or on the store); run without --resume")
    return gen
