"""Which platform we run on, from environment variables and well-known paths only (no network,
no heavy imports), and what that platform implies: where data survives, how a public URL is
made, how long a session may last, and which terms to respect.

``detect(env=..., root=...)`` takes the environment and a filesystem root so tests (and
``sdcloud doctor --root``) can fake any platform without touching the real ``/content``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PlatformProfile:
    id: str
    name: str
    persistent: tuple[str, ...]  # paths whose content survives the session (when present)
    ephemeral: tuple[str, ...]  # paths lost when the machine goes away
    public_url: str  # colab-proxy | paperspace-6006 | runpod-proxy | vast-port | tunnel | none
    tunnels_allowed: bool
    session_limit_hours: float | None
    limits: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


PROFILES: dict[str, PlatformProfile] = {
    p.id: p
    for p in (
        PlatformProfile(
            "colab",
            "Google Colab",
            persistent=("/content/drive/MyDrive",),
            ephemeral=("/content", "/tmp"),
            public_url="colab-proxy",
            tunnels_allowed=False,
            session_limit_hours=12,
            limits=(
                "at most 12 hours per VM; idle runtimes are cut (commonly after about 90 minutes)",
                "a connected GPU runtime consumes compute units even when idle",
                "free tier RAM is about 12.7 GB; High-RAM runtimes are paid-only",
                "Drive (FUSE) has been reported to disconnect after about 4 hours",
            ),
            terms=(
                "Colab's free tier does not allow Stable Diffusion web UIs: Google deletes free-tier "
                "runtimes that run them. Run 'sdcloud serve' only on a paid plan (Pro, Pro+, "
                "pay-as-you-go compute units), or use another provider.",
                "On every Colab tier, connecting to remote proxies (tunnels) is not allowed: sdcloud uses "
                "Colab's own port proxy and never starts a tunnel here.",
            ),
            sources=(
                "ctools#3641",
                "colab FAQ [colab-faq-id]",
                "[colab-faq-alejo]",
                "ctools#5729",
                "ctools#3441",
            ),
        ),
        PlatformProfile(
            "kaggle",
            "Kaggle Notebooks",
            persistent=("/kaggle/working",),
            ephemeral=("/tmp", "/kaggle/temp"),
            public_url="tunnel",
            tunnels_allowed=True,
            session_limit_hours=None,
            limits=(
                "/kaggle/working is kept only as the output of a saved notebook version",
                "session and weekly GPU quotas apply (not in sdcloud's catalog: check Kaggle's docs)",
            ),
            terms=("check Kaggle's terms before exposing a web UI publicly",),
        ),
        PlatformProfile(
            "paperspace",
            "Paperspace Gradient",
            persistent=("/storage", "/notebooks"),
            ephemeral=("/tmp",),
            public_url="paperspace-6006",
            tunnels_allowed=False,
            session_limit_hours=None,
            limits=(
                "the Free plan's GPUs auto-shut down after 6 hours; paid plans use the timer you set: "
                "pass --max-hours to match it",
                "Free plan: 5 GB persistent storage, not expandable",
            ),
            terms=(
                "Paperspace prohibits tunnels, SSH, ngrok and RDP (accounts get suspended): sdcloud "
                "serves on port 6006 and uses Paperspace's own https://tensorboard-<host> URL.",
            ),
            sources=("fsd#2147", "[pps-free]", "[apievang-pps]", "[tlb-pps]"),
        ),
        PlatformProfile(
            "runpod",
            "RunPod",
            persistent=("/workspace", "/runpod-volume"),
            ephemeral=("/tmp", "/root"),
            public_url="runpod-proxy",
            tunnels_allowed=True,
            session_limit_hours=None,
            limits=(
                "container disk is lost on stop; the /workspace volume is deleted on terminate",
                "a stopped pod's volume disk still costs $0.20/GB/month",
            ),
            terms=("expose the serving port as an HTTP port in the pod template so the proxy can reach it",),
            sources=("[rp-storage]", "fsd#2276"),
        ),
        PlatformProfile(
            "vast",
            "Vast.ai",
            persistent=("/workspace",),
            ephemeral=("/tmp", "/root"),
            public_url="vast-port",
            tunnels_allowed=True,
            session_limit_hours=None,
            limits=(
                "/workspace persists only when a volume is attached; destroy wipes the disk",
                "storage is billed per GB even while stopped",
                "interruptible instances are preempted by higher bids",
            ),
            sources=("[vast-base]", "[usagepricing]"),
        ),
        PlatformProfile(
            "studio-lab",
            "SageMaker Studio Lab",
            persistent=("/home/studio-lab-user",),
            ephemeral=("/tmp",),
            public_url="none",
            tunnels_allowed=False,
            session_limit_hours=4,
            limits=("GPU sessions last at most 4 hours, 4 GPU hours a day", "15 GB persistent storage"),
            terms=(
                "Studio Lab blocks accounts for terms violations, including tunnels: use sdcloud from the "
                "notebook (API on 127.0.0.1) rather than a public URL.",
            ),
            sources=("aws/studio-lab-examples#192", "aws/studio-lab-examples#288"),
        ),
        PlatformProfile(
            "lambda",
            "Lambda Cloud",
            persistent=("/home/ubuntu/<filesystem>",),
            ephemeral=("/home/ubuntu", "/tmp"),
            public_url="tunnel",
            tunnels_allowed=True,
            session_limit_hours=None,
            limits=("only an attached persistent filesystem (/home/ubuntu/<name>) survives terminate",),
        ),
        PlatformProfile(
            "vm",
            "Linux VM or local machine",
            persistent=(),
            ephemeral=("/tmp",),
            public_url="tunnel",
            tunnels_allowed=True,
            session_limit_hours=None,
            limits=("a preemptible/spot VM can be stopped at any time",),
        ),
    )
}


@dataclass(frozen=True)
class Detected:
    profile: PlatformProfile
    evidence: tuple[str, ...]
    persistent_present: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.profile.id


def _env_any(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        if env.get(n):
            return f"env {n}"
    return None


def _path_any(root: Path, *paths: str) -> str | None:
    for p in paths:
        if (root / p.lstrip("/")).exists():
            return f"path {p}"
    return None


_RULES: tuple[tuple[str, Callable[[Mapping[str, str], Path], str | None]], ...] = (
    (
        "colab",
        lambda e, r: (
            _env_any(e, "COLAB_RELEASE_TAG", "COLAB_GPU", "COLAB_BACKEND_VERSION")
            or _path_any(r, "/content/sample_data")
        ),
    ),
    (
        "kaggle",
        lambda e, r: (
            _env_any(e, "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE") or _path_any(r, "/kaggle/working")
        ),
    ),
    (
        "paperspace",
        lambda e, r: _env_any(e, "PAPERSPACE_FQDN", "PAPERSPACE_NOTEBOOK_REPO_ID", "PAPERSPACE_CLUSTER_ID"),
    ),
    ("runpod", lambda e, r: _env_any(e, "RUNPOD_POD_ID", "RUNPOD_ENDPOINT_ID")),
    (
        "vast",
        lambda e, r: (
            _env_any(e, "VAST_CONTAINERLABEL", "VAST_TCP_PORT_22") or _path_any(r, "/etc/vast_boot.d")
        ),
    ),
    (
        "studio-lab",
        lambda e, r: (
            ("env USER=studio-lab-user" if e.get("USER") == "studio-lab-user" else None)
            or _path_any(r, "/home/studio-lab-user")
        ),
    ),
    (
        "lambda",
        lambda e, r: _path_any(r, "/etc/apt/sources.list.d/lambda-repository.list", "/etc/lambda-stack"),
    ),
)


def detect(env: Mapping[str, str] | None = None, root: Path | str = "/") -> Detected:
    """The platform we run on. Markers are checked in a fixed order; the first match wins."""
    env = os.environ if env is None else env
    root = Path(root)
    for pid, rule in _RULES:
        hit = rule(env, root)
        if hit:
            return _with_places(PROFILES[pid], (hit,), root)
    return _with_places(PROFILES["vm"], ("no platform marker found",), root)


def _with_places(profile: PlatformProfile, evidence: tuple[str, ...], root: Path) -> Detected:
    present = tuple(p for p in profile.persistent if "<" not in p and (root / p.lstrip("/")).is_dir())
    return Detected(profile, evidence, present)


def on_persistent_storage(path: Path, detected: Detected, root: Path | str = "/") -> bool | None:
    """Whether ``path`` lies on one of the platform's persistent places (None: unknown, e.g. a VM)."""
    if not detected.profile.persistent:
        return None
    root = Path(root)
    resolved = _resolve(path)
    for place in detected.persistent_present:
        if resolved.is_relative_to(_resolve(root / place.lstrip("/"))):
            return True
    if detected.id == "lambda":
        home = _resolve(root / "home/ubuntu")
        rel = resolved.relative_to(home) if resolved.is_relative_to(home) else None
        return bool(rel and rel.parts and os.path.ismount(home / rel.parts[0]))
    return False


def _resolve(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except OSError:
        return p.expanduser().absolute()


def colab_tier_hint(gpu_name: str | None, ram_gb: float | None) -> str:
    """'paid' when the runtime shows something only paid tiers get, else 'unknown'.

    The free tier offers only a T4 and about 12.7 GB of RAM; an A100/V100/L4 or a High-RAM
    runtime means a paid tier. We cannot tell a paid T4 from a free one, so we never claim 'free'.
    """
    name = (gpu_name or "").upper()
    if any(g in name for g in ("A100", "V100", "L4", "H100")) or (ram_gb or 0) > 14:
        return "paid"
    return "unknown"
