"""Cheap facts about this machine for ``sdcloud doctor``: GPU (via ``nvidia-smi``), package
versions (via ``importlib.metadata``, without importing them), RAM and disk.

Everything is a method on :class:`SystemProbe` so tests can substitute what a machine without a
GPU cannot show.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    driver: str


@dataclass(frozen=True)
class DiskSpace:
    total_gb: float
    free_gb: float


class SystemProbe:
    def __init__(self, root: Path | str = "/", smi_timeout_s: float = 3.0) -> None:
        self.root = Path(root)
        self.smi_timeout_s = smi_timeout_s

    # GPU ---------------------------------------------------------------------------------
    def _smi(self, *args: str) -> str | None:
        exe = shutil.which("nvidia-smi")
        if not exe:
            return None
        try:
            res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=self.smi_timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout if res.returncode == 0 else None

    def gpus(self) -> list[Gpu]:
        out = self._smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits")
        gpus = []
        for line in (out or "").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3:
                try:
                    gpus.append(Gpu(parts[0], float(parts[1]) / 1024, parts[2]))
                except ValueError:
                    continue
        return gpus

    def driver_cuda(self) -> str | None:
        """Highest CUDA version the driver supports (from the ``nvidia-smi`` banner)."""
        m = re.search(r"CUDA Version:\s*([\d.]+)", self._smi() or "")
        return m.group(1) if m else None

    # Packages ----------------------------------------------------------------------------
    def version(self, dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    def requirement(self, dist: str, on: str) -> str | None:
        """The requirement ``dist`` declares on ``on`` (``"torch==2.3.0"``), if any."""
        try:
            reqs = md.requires(dist) or []
        except md.PackageNotFoundError:
            return None
        for req in reqs:
            name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]
            if name.lower() == on.lower() and "extra ==" not in req:
                return req.split(";")[0].strip()
        return None

    def torch_cuda_build(self) -> str | None:
        """The CUDA version torch was built for, read from ``torch/version.py`` without importing torch
        ('' for a CPU build, None when torch is absent)."""
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        for loc in spec.submodule_search_locations:
            try:
                text = (Path(loc) / "version.py").read_text(encoding="utf-8")
            except OSError:
                continue
            m = re.search(r"^cuda\b[^=\n]*=\s*['\"]([\d.]+)['\"]", text, re.M)
            return m.group(1) if m else ""
        return None

    # Memory and disk ---------------------------------------------------------------------
    def ram_gb(self) -> tuple[float, float] | None:
        """(total, available) in GB from /proc/meminfo."""
        try:
            text = (self.root / "proc/meminfo").read_text()
        except OSError:
            return None
        values = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[key] = float(rest.split()[0]) / 1024 / 1024
        if "MemTotal" not in values:
            return None
        return values["MemTotal"], values.get("MemAvailable", values["MemTotal"])

    def disk(self, path: Path) -> DiskSpace | None:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            return None
        return DiskSpace(usage.total / 1e9, usage.free / 1e9)
