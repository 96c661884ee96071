"""The start-up timeline of ``sdcloud serve``: how long each phase of a new session took, from
the moment the process started to the first image.

Phases, in order: ``install_check`` (the packages sdcloud needs are installed, read from their
metadata without importing them), ``imports`` (the heavy libraries: torch, diffusers, the web
stack), ``store_restore`` (settings, presets, LoRAs and the hash cache from the store),
``model_fetch`` (a checkpoint copied from a slow mount to local disk, or found there already),
``model_load`` (the checkpoint into memory and onto the device), ``first_image`` (the first
image made, saved or not: A1111's API does not save by default). ``serve`` prints the
timeline; ``/api/session`` reports it under ``startup``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sdcloud.errors import SdcloudError
from sdcloud.i18n import N_

PHASES = ("install_check", "imports", "store_restore", "model_fetch", "model_load", "first_image")
LABELS = {"install_check": N_("install check"), "imports": N_("imports"), "store_restore": N_("store restore"),
          "model_fetch": N_("model fetch"), "model_load": N_("model load"), "first_image": N_("first image ready")}
# what `serve` needs installed (distribution names), checked without importing them
REQUIRED = ("torch", "diffusers", "transformers", "safetensors", "fastapi", "uvicorn", "gradio", "pydantic")


def process_started_at() -> float:
    """When this process started (epoch seconds), from /proc; now where /proc is missing."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat, counted after the command name
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class Phase:
    name: str
    start_s: float  # since the process started
    seconds: float
    detail: str = ""


class StartupTimeline:
    """Phases recorded as they happen (thread-safe: the first image comes from the job worker)."""

    def __init__(self, started_at: float | None = None) -> None:
        self.started_at = process_started_at() if started_at is None else started_at
        self._phases: dict[str, Phase] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() - self.started_at

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[dict[str, str]]:
        """Time the block as phase ``name``; the block may set ``info["detail"]``. A phase
        that runs again (a second model load) keeps its first timing."""
        info = {"detail": detail}
        start = self.now()
        try:
            yield info
        finally:
            self.add(name, start, self.now() - start, info["detail"])

    def add(self, name: str, start_s: float, seconds: float, detail: str = "") -> None:
        with self._lock:
            self._phases.setdefault(name, Phase(name, round(start_s, 3), round(max(0.0, seconds), 3), detail))

    def mark_first_image(self, detail: str = "") -> bool:
        """Record the first image (from the end of the last start-up phase); True the first time."""
        with self._lock:
            if "first_image" in self._phases:
                return False
            before = [p.start_s + p.seconds for p in self._phases.values()]
        now = self.now()
        since = max(before, default=0.0)
        self.add("first_image", since, now - since, detail)
        return True

    def phases(self) -> list[Phase]:
        with self._lock:
            return sorted(self._phases.values(), key=lambda p: (PHASES.index(p.name) if p.name in PHASES
                                                               else len(PHASES), p.start_s))

    def to_dict(self) -> dict[str, Any]:
        phases = self.phases()
        ready = [p for p in phases if p.name != "first_image"]
        first = next((p for p in phases if p.name == "first_image"), None)
        return {
            "process_started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "phases": [asdict(p) for p in phases],
            "ready_s": round(max((p.start_s + p.seconds for p in ready), default=0.0), 3),
            "first_image_s": None if first is None else round(first.start_s + first.seconds, 3),
        }

    def summary(self, names: tuple[str, ...] | None = None) -> str:
        """One line: ``ready in 8.1 s: install check 0.02 s · imports 5.3 s · ...``."""
        parts = [f"{LABELS.get(p.name, p.name)} {p.seconds:.2f} s" for p in self.phases()
                 if names is None or p.name in names]
        return " · ".join(parts)


def check_install(*, ui: bool = True) -> dict[str, str]:
    """Versions of the packages ``serve`` needs, read from their metadata (no import); a missing
    one is a one-line error that says how to fix it."""
    versions: dict[str, str] = {}
    missing = []
    for dist in REQUIRED:
        if dist == "gradio" and not ui:
            continue
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise SdcloudError(f"missing package(s) {', '.join(missing)}: reinstall sdcloud "
                           "(pip install -e . in the source folder, or pip install sdcloud)")
    return versions


def import_heavy(*, ui: bool = True) -> str:
    """Import the libraries a server needs, once, here, so their cost is one named phase
    (and not spread over the first request). Nothing imports them earlier: ``sdcloud --help``,
    ``plan``, ``storage`` and ``ckpt`` never do."""
    import importlib

    names = ["torch", "diffusers", "transformers", "fastapi", "uvicorn", *(["gradio"] if ui else [])]
    for name in names:
        importlib.import_module(name)
    import torch

    return f"torch {torch.__version__} ({'+'.join(names[1:])})"
