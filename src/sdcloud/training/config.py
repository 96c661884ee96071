"""Every training option in one dataclass, from CLI flags, a TOML file (``--train-config``) or the API.

Names follow the CLI flags with ``_`` for ``-`` (``--grad-accum`` is ``grad_accum``); the TOML
file takes the same names at top level (kohya-style aliases such as ``network_dim`` and
``learning_rate`` are accepted too). Validation happens here, before a model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

OPTIMIZERS = ("AdamW", "AdamW8bit", "Prodigy", "Lion")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
NETWORKS = ("lora", "locon", "loha", "lokr")
PRECISIONS = ("no", "fp16", "bf16")
INT_LIMIT = 2**63  # a whole-number option must fit in 64 bits (seeds, steps and sizes reach torch)

# kohya option names -> ours
ALIASES = {
    "network_dim": "rank", "network_alpha": "alpha", "learning_rate": "lr", "train_batch_size": "batch",
    "max_train_steps": "steps", "output_name": "name", "pretrained_model_name_or_path": "model",
    "gradient_accumulation_steps": "grad_accum", "lr_warmup_steps": "warmup_steps",
    "optimizer_type": "optimizer", "train_data_dir": "dataset", "reg_data_dir": "reg_dir",
    "shuffle_caption": "shuffle_caption", "caption_dropout_rate": "caption_dropout",
    "caption_tag_dropout_rate": "caption_tag_dropout", "v_parameterization": "v_prediction",
    "network_train_unet_only": "unet_only", "text_encoder_lr": "te_lr", "unet_lr": "unet_lr",
    "sample_every_n_steps": "sample_every", "save_every_n_steps": "save_every",
}


@dataclass
class TrainConfig:
    """A LoRA training run. ``dataset`` is a folder; ``name`` the output file stem."""

    dataset: str = ""
    model: str = "demo"
    name: str = "lora"
    steps: int = 1500
    rank: int = 16
    alpha: float = 8.0
    lr: float = 1e-4
    unet_lr: float | None = None
    te_lr: float | None = None
    resolution: int = 512
    batch: int = 2
    seed: int = 1
    grad_accum: int = 1
    train_text_encoder: bool = False
    unet_only: bool = False  # kohya's --network_train_unet_only (wins over train_text_encoder)
    network: str = "lora"  # lora | locon | loha | lokr (the last three through lycoris-lora)
    conv_rank: int = 0  # kohya conv_dim: LoRA on 3x3 convs too (LoRA-C3Lier) when > 0
    conv_alpha: float = 1.0
    dropout: float = 0.0
    optimizer: str = "AdamW"
    weight_decay: float = 1e-2
    scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0
    v_prediction: bool | None = None  # None: follow the model
    clip_skip: int = 1
    prior_loss_weight: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    cache_latents: bool = True
    cache_latents_to_disk: bool = True
    # dataset
    reg_dir: str | None = None
    caption_extension: str = ""  # "" = .txt, then .caption
    repeats: int = 1  # for images directly in the dataset folder (N_concept folders carry their own)
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_dropout: float = 0.0
    caption_tag_dropout: float = 0.0
    enable_bucket: bool = True
    min_bucket_reso: int | None = None
    max_bucket_reso: int | None = None
    bucket_reso_steps: int = 64
    min_image_size: int | None = None  # shorter side below this is refused; default resolution // 4
    # output, state, samples
    save_every: int = 0
    save_state_every: int = 100
    sample_every: int = 0
    sample_prompt: str = ""
    sample_steps: int = 20
    comment: str = ""
    memory_preset: str | None = None
    # DreamBooth (full fine-tune): prior preservation with class images our engine generates
    mode: str = "lora"  # lora | dreambooth
    class_prompt: str = ""
    num_class_images: int = 0
    class_steps: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trains_text_encoder(self) -> bool:
        return self.train_text_encoder and not self.unet_only

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ``BadRequest`` with one line for the first wrong option."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise BadRequest(msg)

        for f in fields(self):  # inf/nan/overflow in any number (a TOML 'inf', JSON 1e400) is refused first
            _check_number(f.name, getattr(self, f.name))
        need(bool(self.dataset), "give the dataset folder (sdcloud train lora DATASET ...)")
        need(bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name) and self.name[0] != ".",
             f"--name {self.name!r}: use letters, digits, '-', '_' or '.'")
        need(self.rank > 0, f"--rank must be > 0 (got {self.rank}); 4-32 are common")
        need(self.alpha > 0, f"--alpha must be > 0 (got {self.alpha}); kohya's default is 1, half of --rank is common")
        need(self.conv_rank >= 0, "--conv-rank must be >= 0")
        need(self.steps > 0, f"--steps must be > 0 (got {self.steps})")
        need(self.batch > 0, f"--batch must be > 0 (got {self.batch})")
        need(self.grad_accum > 0, "--grad-accum must be > 0")
        need(self.lr > 0, f"--lr must be > 0 (got {self.lr})")
        need(all(x is None or x > 0 for x in (self.unet_lr, self.te_lr)), "--unet-lr and --te-lr must be > 0")
        need(0 <= self.dropout < 1, f"--dropout must be in [0, 1) (got {self.dropout})")
        need(self.conv_alpha > 0, f"--conv-alpha must be > 0 (got {self.conv_alpha})")
        need(self.weight_decay >= 0 and self.max_grad_norm >= 0, "--weight-decay and --max-grad-norm must be >= 0")
        need(self.prior_loss_weight >= 0, f"--prior-loss-weight must be >= 0 (got {self.prior_loss_weight})")
        need(self.resolution >= 64 and self.resolution % 8 == 0,
             f"--resolution must be a multiple of 8, at least 64 (got {self.resolution})")
        need(self.bucket_reso_steps >= 8 and self.bucket_reso_steps % 8 == 0,
             "--bucket-reso-steps must be a multiple of 8")
        need(self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        need(self.scheduler in SCHEDULERS, f"--scheduler {self.scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        need(self.network in NETWORKS, f"--network {self.network!r}: use one of {', '.join(NETWORKS)}")
        need(self.mixed_precision in PRECISIONS,
             f"--mixed-precision {self.mixed_precision!r}: use one of {', '.join(PRECISIONS)}")
        need(1 <= self.clip_skip <= 12, "--clip-skip must be between 1 and 12")
        need(0 <= self.caption_dropout < 1 and 0 <= self.caption_tag_dropout < 1,
             "caption dropout rates must be in [0, 1)")
        need(self.keep_tokens >= 0, "--keep-tokens must be >= 0")
        need(self.noise_offset >= 0 and self.min_snr_gamma >= 0, "--noise-offset and --min-snr-gamma must be >= 0")
        need(self.warmup_steps >= 0 and self.warmup_steps < self.steps, "--warmup-steps must be in [0, --steps)")
        need(min(self.save_every, self.save_state_every, self.sample_every) >= 0,
             "--save-every, --save-state-every and --sample-every must be >= 0")
        need(self.repeats > 0, "--repeats must be > 0")
        need(self.mode in ("lora", "dreambooth"), f"mode {self.mode!r}: use lora or dreambooth")
        need(self.num_class_images >= 0 and self.class_steps > 0, "--num-class-images must be >= 0")
        need(not self.num_class_images or bool(self.class_prompt),
             "--num-class-images needs --class-prompt (e.g. 'a photo of a dog')")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def bucket_range(self) -> tuple[int, int]:
        lo = self.min_bucket_reso or min(256, self.resolution)
        hi = self.max_bucket_reso or (max(1024, self.resolution) if self.resolution >= 512 else self.resolution * 2)
        return lo, hi

    @property
    def too_small(self) -> int:
        return self.min_image_size if self.min_image_size is not None else self.resolution // 4


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _check_number(name: str, value: Any) -> None:
    """A number option must be finite (no inf/nan) and, if whole, fit in 64 bits."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"option {name!r} must be a finite number (got {value})")
    if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
        raise BadRequest(f"option {name!r} is too large")


def coerce(name: str, value: Any) -> Any:
    """Type-check one option value against the dataclass field (TOML gives ints for floats etc.)."""
    f = _FIELDS[name]
    kind = str(f.type)
    if value is None:
        return None
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise BadRequest(f"option {name!r} must be true or false")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"option {name!r} must be a whole number")
        _check_number(name, value)
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"option {name!r} must be a number")
        try:
            number = float(value)
        except OverflowError:  # a whole number too large for a float
            raise BadRequest(f"option {name!r} is too large") from None
        _check_number(name, number)
        return number
    if kind.startswith("str"):
        if not isinstance(value, (str, Path)):
            raise BadRequest(f"option {name!r} must be text")
        return str(value)
    return value


def config_from_mapping(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Options from a mapping (TOML, API JSON); unknown keys are an error naming the key."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key).replace("-", "_")
        if name not in _FIELDS or name == "extra":
            raise BadRequest(f"unknown training option {key!r}")
        changes[name] = coerce(name, value)
    return dataclasses.replace(base or TrainConfig(), **changes)


def load_toml(path: Path) -> dict[str, Any]:
    """A ``--train-config`` file: options at top level, or under ``[train]``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadRequest(f"training config {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"training config {path} is not valid TOML: {exc}") from None
    return dict(data.get("train", data))
