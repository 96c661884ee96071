"""``sdcloud doctor``: what is wrong with this machine for Stable Diffusion, and what to do.

Each check returns :class:`Finding` values with a level (ok / info / warn / error) and, for
anything not ok, the fix. Checks read environment, files and ``nvidia-smi`` only: no torch
import, no network, well under a second.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdcloud.cloud.platforms import Detected, colab_tier_hint, detect, on_persistent_storage
from sdcloud.cloud.system import SystemProbe
from sdcloud.settings import Settings

LOW_DISK_GB = 10.0
LOW_RAM_GB = 16.0
LOW_VRAM_GB = 8.0


@dataclass(frozen=True)
class Finding:
    level: str  # ok | info | warn | error
    topic: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    platform: str
    findings: list[Finding]
    elapsed_s: float

    @property
    def worst(self) -> str:
        order = ("ok", "info", "warn", "error")
        return max((f.level for f in self.findings), key=order.index, default="ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "worst": self.worst,
            "elapsed_s": round(self.elapsed_s, 3),
            "findings": [asdict(f) for f in self.findings],
        }


def run_doctor(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    root: Path | str = "/",
    probe: SystemProbe | None = None,
    train: tuple[Any, str] | None = None,
) -> Report:
    """``train``: (TrainConfig, family) to check against the GPU's memory (``doctor --train-config``)."""
    started = time.perf_counter()
    env = os.environ if env is None else env
    probe = probe or SystemProbe(root)
    detected = detect(env, root)
    gpus = probe.gpus()
    ram = probe.ram_gb()
    findings: list[Finding] = []
    findings += _platform(detected, gpus[0].name if gpus else None, ram[0] if ram else None)
    findings += _gpu_and_versions(probe, gpus)
    findings += _ram(ram)
    findings += _places(detected, settings, probe, Path(root))
    findings += _outputs(detected, settings, Path(root))
    findings += _store(settings, env, detected, Path(root))
    if train is not None:
        findings += _training(train[0], train[1], gpus[0].memory_gb if gpus else None)
    return Report(detected.profile.name, findings, time.perf_counter() - started)


def _training(cfg: Any, family: str, vram_gb: float | None) -> list[Finding]:
    from sdcloud.training.presets import estimate_vram_gb, fit_warning

    need = estimate_vram_gb(cfg, family)
    if vram_gb is None:
        return [Finding("info", "training", f"no GPU detected; these settings need about {need:g} GB of VRAM")]
    warning = fit_warning(cfg, family, vram_gb)
    if warning:
        return [Finding("warn", "training", warning, "sdcloud train presets")]
    return [Finding("ok", "training", f"{family} LoRA settings need about {need:g} GB; the GPU has {vram_gb:g} GB")]


def _platform(detected: Detected, gpu_name: str | None, ram_total: float | None) -> list[Finding]:
    prof = detected.profile
    out = [Finding("info", "platform", f"{prof.name} ({', '.join(detected.evidence)})")]
    if prof.session_limit_hours:
        out.append(
            Finding(
                "info",
                "session limit",
                f"{prof.session_limit_hours:g} h; 'sdcloud serve' warns 15 min before and stops gracefully",
            )
        )
    for limit in prof.limits:
        out.append(Finding("info", "limit", limit))
    terms = list(prof.terms)
    if detected.id == "colab" and colab_tier_hint(gpu_name, ram_total) == "paid":
        terms = terms[1:]  # the free-tier warning does not apply to a runtime only paid tiers get
        out.append(Finding("info", "colab tier", "paid runtime (GPU or High-RAM only paid tiers get)"))
    for term in terms:
        out.append(Finding("warn", "terms", term, "respect it: sdcloud does nothing to evade it"))
    return out


def _ver_tuple(text: str | None) -> tuple[int, ...]:
    nums = []
    for part in (text or "").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)


def _gpu_and_versions(probe: SystemProbe, gpus: list[Any]) -> list[Finding]:
    out: list[Finding] = []
    for g in gpus:
        level = "ok" if g.memory_gb >= LOW_VRAM_GB else "warn"
        out.append(
            Finding(
                level,
                "gpu",
                f"{g.name}, {g.memory_gb:.1f} GB VRAM, driver {g.driver}",
                "" if level == "ok" else "SDXL needs about 8 GB: use --memory lowvram or an SD 1.5 model",
            )
        )
    if not gpus:
        out.append(
            Finding(
                "warn",
                "gpu",
                "no NVIDIA GPU found (nvidia-smi absent or failing)",
                "generation will run on the CPU (slow); pick a GPU runtime/instance",
            )
        )
    torch_v = probe.version("torch")
    cuda_build = probe.torch_cuda_build()
    driver_cuda = probe.driver_cuda() if gpus else None
    if torch_v is None:
        out.append(
            Finding(
                "warn",
                "torch",
                "torch is not installed",
                "pip install sdcloud pulls it; on Colab or a CUDA image the existing torch is reused",
            )
        )
    else:
        build = f"CUDA {cuda_build}" if cuda_build else "CPU-only build"
        out.append(
            Finding(
                "ok",
                "torch",
                f"torch {torch_v} ({build})"
                + (f"; driver supports CUDA {driver_cuda}" if driver_cuda else ""),
            )
        )
        if gpus and cuda_build == "":
            out.append(
                Finding(
                    "error",
                    "torch",
                    "an NVIDIA GPU is present but torch is the CPU-only build",
                    "reinstall torch from the CUDA wheel index matching your driver "
                    "(https://pytorch.org/get-started/locally/)",
                )
            )
        if cuda_build and driver_cuda and _ver_tuple(cuda_build)[:2] > _ver_tuple(driver_cuda)[:2]:
            out.append(
                Finding(
                    "error",
                    "cuda",
                    f"torch was built for CUDA {cuda_build} but the driver supports "
                    f"only up to CUDA {driver_cuda}",
                    f"install a torch wheel for CUDA <= {driver_cuda} or use an image with a newer driver",
                )
            )
    out += _known_bad(probe, torch_v)
    for dist in ("diffusers", "transformers", "xformers"):
        v = probe.version(dist)
        if v:
            out.append(Finding("ok", "package", f"{dist} {v}"))
    return out


def _known_bad(probe: SystemProbe, torch_v: str | None) -> list[Finding]:
    out: list[Finding] = []
    numpy_v = probe.version("numpy")
    if torch_v and numpy_v and _ver_tuple(numpy_v) >= (2,) and _ver_tuple(torch_v) < (2, 3):
        out.append(
            Finding(
                "error",
                "versions",
                f"numpy {numpy_v} with torch {torch_v}: torch before 2.3 was "
                "built against numpy 1.x and fails to convert arrays",
                'pip install "numpy<2", or upgrade torch to 2.3 or newer',
            )
        )
    req = probe.requirement("xformers", "torch") if probe.version("xformers") else None
    if torch_v and req and "==" in req:
        wanted = req.split("==", 1)[1].strip()
        if _ver_tuple(wanted)[:3] != _ver_tuple(torch_v)[:3]:
            out.append(
                Finding(
                    "error",
                    "versions",
                    f"xformers {probe.version('xformers')} was built for torch "
                    f"{wanted}, but torch {torch_v} is installed: its CUDA kernels will not load",
                    "pip uninstall xformers (sdcloud uses torch's own attention), or install the "
                    "xformers build for your torch",
                )
            )
    return out


def _ram(ram: tuple[float, float] | None) -> list[Finding]:
    if ram is None:
        return [Finding("info", "ram", "unknown (no /proc/meminfo)")]
    total, avail = ram
    if total < LOW_RAM_GB:
        return [
            Finding(
                "warn",
                "ram",
                f"{total:.1f} GB total, {avail:.1f} GB available",
                "loading or merging SDXL can run out of RAM: sdcloud streams tensors, but prefer a "
                "High-RAM runtime for SDXL",
            )
        ]
    return [Finding("ok", "ram", f"{total:.1f} GB total, {avail:.1f} GB available")]


def _places(detected: Detected, settings: Settings, probe: SystemProbe, root: Path) -> list[Finding]:
    out: list[Finding] = []
    places = [(p, "persistent") for p in detected.persistent_present]
    places += [(p, "ephemeral") for p in detected.profile.ephemeral if (root / p.lstrip("/")).is_dir()]
    for place, kind in places:
        path = root / place.lstrip("/")
        try:
            os.listdir(path)
        except OSError as exc:
            fix = (
                "remount it (Colab: from google.colab import drive; drive.flush_and_unmount(); "
                "drive.mount('/content/drive'))"
                if exc.errno == errno.ENOTCONN
                else "check the mount"
            )
            out.append(Finding("error", "storage", f"{place} ({kind}) cannot be read: {exc.strerror}", fix))
            continue
        out.append(_disk_finding(probe, path, f"{place} ({kind})"))
    missing = [
        p for p in detected.profile.persistent if p not in detected.persistent_present and "<" not in p
    ]
    if detected.profile.persistent and not detected.persistent_present:
        fix = (
            "mount Google Drive (from google.colab import drive; drive.mount('/content/drive'))"
            if detected.id == "colab"
            else "attach a persistent volume"
        )
        out.append(
            Finding("warn", "storage", f"no persistent place is present (expected {', '.join(missing)})", fix)
        )
    out.append(_disk_finding(probe, settings.data_dir, f"data dir {settings.data_dir}"))
    space = probe.disk(settings.data_dir)
    if space is not None and space.free_gb * 1024 < settings.limits.min_free_mb:
        out.append(Finding(
            "warn", "disk",
            f"data dir {settings.data_dir}: only {space.free_gb * 1024:.0f} MB free (below limits.min_free_mb "
            f"= {settings.limits.min_free_mb} MB)",
            "saving images and queueing jobs fail (HTTP 507) once it is full: free space first",
        ))
    return out


def _disk_finding(probe: SystemProbe, path: Path, label: str) -> Finding:
    space = probe.disk(path)
    if space is None:
        return Finding("info", "disk", f"{label}: free space unknown")
    detail = f"{label}: {space.free_gb:.1f} GB free of {space.total_gb:.1f} GB"
    if space.free_gb < LOW_DISK_GB:
        return Finding(
            "warn", "disk", detail, "an SDXL checkpoint is about 7 GB: free space or use another disk"
        )
    return Finding("ok", "disk", detail)


def _outputs(detected: Detected, settings: Settings, root: Path) -> list[Finding]:
    outputs = settings.outputs_path
    if settings.store:
        return [
            Finding("ok", "outputs", f"written to {outputs} and synced to {settings.store} by the outbox")
        ]
    persistent = on_persistent_storage(outputs, detected, root)
    if persistent is None:
        return [
            Finding(
                "info",
                "outputs",
                f"{outputs} (this machine's disk; persistence depends on your VM)",
                "for spot/preemptible VMs pass --store to sync outputs elsewhere",
            )
        ]
    if persistent:
        return [Finding("ok", "outputs", f"{outputs} is on persistent storage")]
    where = (
        detected.persistent_present[0]
        if detected.persistent_present
        else (detected.profile.persistent[0] if detected.profile.persistent else "a persistent volume")
    )
    return [
        Finding(
            "warn",
            "outputs",
            f"{outputs} is on ephemeral disk: images are lost when the session ends",
            f"pass --store {where}/sdcloud (synced in the background) or --data-dir {where}/sdcloud",
        )
    ]


def _store(settings: Settings, env: Mapping[str, str], detected: Detected, root: Path) -> list[Finding]:
    store = settings.store
    if not store:
        return [Finding("info", "store", "no persistent store configured (--store)")]
    if store.startswith("hf://"):
        has = bool(
            env.get("HF_TOKEN")
            or env.get("HUGGING_FACE_HUB_TOKEN")
            or (Path(env.get("HF_HOME", Path.home() / ".cache/huggingface")) / "token").exists()
        )
        return [
            Finding(
                "ok" if has else "error",
                "store",
                f"{store}: Hugging Face token "
                + ("found" if has else "missing")
                + " (not contacted: doctor stays offline)",
                "" if has else "set HF_TOKEN or run 'hf auth login'",
            )
        ]
    if store.startswith("s3://"):
        has = bool(
            env.get("AWS_ACCESS_KEY_ID")
            or env.get("AWS_PROFILE")
            or (Path.home() / ".aws/credentials").exists()
        )
        return [
            Finding(
                "ok" if has else "error",
                "store",
                f"{store}: S3 credentials "
                + ("found" if has else "missing")
                + " (not contacted: doctor stays offline)",
                "" if has else "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
            )
        ]
    path = Path(store.removeprefix("file://")).expanduser()
    if not path.is_dir():
        return [
            Finding(
                "error",
                "store",
                f"{path} does not exist or is not a folder",
                "create it, or mount the drive/volume it lives on",
            )
        ]
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sdcloud-doctor-"):
            pass
    except OSError as exc:
        return [
            Finding(
                "error", "store", f"{path} is not writable: {exc.strerror}", "fix its permissions or mount"
            )
        ]
    if on_persistent_storage(path, detected, root) is False:
        return [
            Finding(
                "warn",
                "store",
                f"{path} is writable but on {detected.profile.name}'s ephemeral disk: "
                "it vanishes with the machine",
                f"point --store at persistent storage ({', '.join(detected.profile.persistent)})",
            )
        ]
    return [Finding("ok", "store", f"{path} is writable")]
