"""One immutable ``Settings`` object, built from (lowest to highest priority): defaults, a TOML
config file, ``SDCLOUD_*`` environment variables, and CLI flags.

It is passed down explicitly; nothing reads a process-wide mutable global.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _default_data_dir() -> Path:
    return Path.home() / "sdcloud"


@dataclass(frozen=True)
class Limits:
    """Input limits enforced by the engine and the API."""

    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_n_iter: int = 32
    max_prompt_length: int = 8000
    max_body_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 0
    """Pixels of one decoded client image; 0: 4 x max_width x max_height (16.7 MP by default)."""
    max_pixel_steps: int = 1024 * 1024 * 8 * 150
    """width x height x batch_size x steps of one batch, each pass (the work one request may
    hold the GPU for; the default allows 1024x1024 x 8 x 150 or 2048x2048 x 2 x 150)."""
    max_memory_mb: int = 0
    """Memory (MB) a generation may count as free on its device; 0: what the device reports. A
    request whose steps cannot fit is refused before any work (``engine/memory_fit.py``)."""
    heavy_workers: int = 2
    """Threads that decode images and parse PNG info for requests; more requests wait."""
    heavy_queue: int = 16
    """Requests that may wait for those threads; beyond it the answer is 503."""
    long_workers: int = 2
    """Threads for long request work (Extras, interrogate, ControlNet detect, checkpoint
    inspect/hash, dataset uploads), apart from the image threads so submits stay quick."""
    long_queue: int = 8
    """Requests that may wait for those threads; beyond it the answer is 503."""
    min_free_mb: int = 500
    """Below this much free space in the data dir, doctor and /api/session warn."""
    max_dataset_upload_bytes: int = 2 * 1024 * 1024 * 1024
    """Bytes of one training dataset upload once unpacked (zip members inflated): a zip bomb
    is refused before it fills the disk."""

    @property
    def image_pixels(self) -> int:
        return self.max_image_pixels or 4 * self.max_width * self.max_height


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Folder fields left as ``None`` follow A1111's layout under
    ``data_dir`` so a user can point sdcloud at an existing A1111 install or a Drive folder."""

    data_dir: Path = field(default_factory=_default_data_dir)
    ckpt_dir: Path | None = None
    lora_dir: Path | None = None
    vae_dir: Path | None = None
    embeddings_dir: Path | None = None
    outputs_dir: Path | None = None
    model: str | None = None
    store: str | None = None
    store_endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, ...] = ()
    api_token: str | None = None
    insecure: bool = False
    allow_url_images: bool = False
    device: str = "auto"  # auto | cuda | mps | cpu
    dtype: str = "auto"  # auto | fp16 | bf16 | fp32
    memory: str = "none"  # none | medvram | lowvram
    vae_tiling: bool = False
    compile: bool = False
    price_per_hour: float | None = None
    budget: float | None = None
    max_hours: float | None = None
    lang: str | None = None  # the web UI's language (ja | en); None: the browser's
    model_copy: str = "auto"  # auto (copy checkpoints from slow mounts to local disk) | always | off
    local_cache_dir: Path | None = None  # where those copies go (default ~/.cache/sdcloud)
    webhook_url: str | None = None  # default webhook for jobs that name none
    webhook_secret: str | None = None  # whsec_...; generated into <state>/webhook-secret when unset
    webhook_allow_private: bool = False  # allow webhook URLs on loopback/private addresses
    broker: str | None = None  # redis://, rediss:// or local: hand generation to workers (scale-out)
    worker_timeout: float = 15.0  # seconds without a worker heartbeat before its job is re-run
    max_attempts: int = 3  # runs of one job on workers before it fails with the reasons
    batch_dirs: tuple[Path, ...] = ()  # folders img2img Batch may read and write besides data_dir
    limits: Limits = field(default_factory=Limits)

    # A1111 folder layout -------------------------------------------------------------
    @property
    def models_root(self) -> Path:
        return self.data_dir / "models"

    @property
    def checkpoints_path(self) -> Path:
        return self.ckpt_dir or self.models_root / "Stable-diffusion"

    @property
    def lora_path(self) -> Path:
        return self.lora_dir or self.models_root / "Lora"

    @property
    def vae_path(self) -> Path:
        return self.vae_dir or self.models_root / "VAE"

    @property
    def embeddings_path(self) -> Path:
        return self.embeddings_dir or self.data_dir / "embeddings"

    @property
    def outputs_path(self) -> Path:
        return self.outputs_dir or self.data_dir / "outputs"

    @property
    def local_cache_path(self) -> Path:
        """Local disk for copies of checkpoints that live on slow mounts (never the data dir,
        which may itself be on Drive)."""
        if self.local_cache_dir is not None:
            return self.local_cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return Path(base) / "sdcloud" / "models"

    @property
    def state_path(self) -> Path:
        """Where sdcloud keeps its own state (hash cache, queue journal, outbox)."""
        return self.data_dir / ".sdcloud"

    def ensure_dirs(self) -> None:
        """Create the A1111 folder layout (idempotent)."""
        for p in (self.checkpoints_path, self.lora_path, self.vae_path, self.embeddings_path,
                  self.outputs_path, self.state_path):
            p.mkdir(parents=True, exist_ok=True)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # Loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
             config_file: Path | None = None) -> Settings:
        """Build settings from config file < environment < ``overrides`` (CLI flags).

        ``None`` values in ``overrides`` mean "not given" and do not override.
        """
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        cfg = config_file or (Path(env["SDCLOUD_CONFIG"]) if env.get("SDCLOUD_CONFIG") else None)
        if cfg is not None:
            values.update(_read_config(Path(cfg)))
        values.update(_from_env(env))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls._build(values)

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        limit_names = {f.name for f in fields(Limits)}
        kwargs: dict[str, Any] = {}
        limit_kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key in limit_names:
                limit_kwargs[key] = _coerce(key, raw, int)
            elif key == "limits" and isinstance(raw, dict):
                for lk, lv in raw.items():
                    if lk not in limit_names:
                        raise BadRequest(f"unknown setting 'limits.{lk}'")
                    limit_kwargs[lk] = _coerce(lk, lv, int)
            elif key in known:
                kwargs[key] = _convert(key, raw)
            else:
                raise BadRequest(f"unknown setting '{key}'")
        if limit_kwargs:
            kwargs["limits"] = Limits(**limit_kwargs)
        settings = cls(**kwargs)
        _validate(settings)
        return settings


_PATH_FIELDS = {"data_dir", "ckpt_dir", "lora_dir", "vae_dir", "embeddings_dir", "outputs_dir", "local_cache_dir"}
_BOOL_FIELDS = {"insecure", "allow_url_images", "vae_tiling", "compile", "webhook_allow_private"}
_FLOAT_FIELDS = {"price_per_hour", "budget", "max_hours", "worker_timeout"}
_INT_FIELDS = {"port", "max_attempts"}
_CHOICES = {
    "device": ("auto", "cuda", "mps", "cpu"),
    "dtype": ("auto", "fp16", "bf16", "fp32"),
    "memory": ("none", "medvram", "lowvram"),
    "model_copy": ("auto", "always", "off"),
}


def _coerce(key: str, raw: Any, typ: type) -> Any:
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return typ(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"setting '{key}' must be {typ.__name__}, got {raw!r}") from None


def _convert(key: str, raw: Any) -> Any:
    if key in _PATH_FIELDS:
        return Path(os.path.expanduser(str(raw)))
    if key in _BOOL_FIELDS:
        return _coerce(key, raw, bool)
    if key in _FLOAT_FIELDS:
        return _coerce(key, raw, float)
    if key in _INT_FIELDS:
        return _coerce(key, raw, int)
    if key == "lang":
        from sdcloud.i18n import explicit_language

        return explicit_language(str(raw))
    if key == "batch_dirs":
        parts = raw.split(os.pathsep) if isinstance(raw, str) else list(raw)
        return tuple(Path(os.path.expanduser(str(p).strip())) for p in parts if str(p).strip())
    if key == "auth":
        if isinstance(raw, str):
            return tuple(a for a in (s.strip() for s in raw.split(",")) if a)
        return tuple(raw)
    return raw


def check_auth_entry(entry: str, where: str) -> None:
    """A ``user:password`` entry with both parts non-empty; the message never repeats a password."""
    user, sep, password = entry.partition(":")
    if not sep:
        raise BadRequest(f"{where} entries must look like user:password")
    if not user.strip():
        raise BadRequest(f"{where}: an entry has an empty user name; use user:password")
    if not password:
        raise BadRequest(f"{where}: user '{user}' has an empty password; use user:password")


def _validate(s: Settings) -> None:
    for key, allowed in _CHOICES.items():
        if getattr(s, key) not in allowed:
            raise BadRequest(f"setting '{key}' must be one of {', '.join(allowed)}; got {getattr(s, key)!r}")
    for entry in s.auth:
        check_auth_entry(entry, "--auth")
    if s.api_token is not None and not s.api_token.strip():
        raise BadRequest("--api-token is empty; give a token, or leave the flag out")
    if s.limits.max_memory_mb < 0:
        raise BadRequest(f"setting 'max_memory_mb' must not be negative, got {s.limits.max_memory_mb}")
    if not 0 < s.port < 65536:
        raise BadRequest(f"port must be 1-65535, got {s.port}")
    for name in ("price_per_hour", "budget", "max_hours"):
        value = getattr(s, name)
        if value is not None and value < 0:
            raise BadRequest(f"setting '{name}' must not be negative")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BadRequest(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"config file {path} is not valid TOML: {exc}") from None


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    names = {f.name for f in fields(Settings)} | {f.name for f in fields(Limits)}
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("SDCLOUD_"):
            name = key[len("SDCLOUD_"):].lower()
            if name in names and name != "limits":
                out[name] = value
    return out
