"""What every selectable script (A1111's Script dropdown) is made of.

A script has two halves that run in different places:

* ``prepare`` runs in the API process when the request comes in. It turns A1111's positional
  ``script_args`` into a JSON-serialisable plan and refuses bad input (a 4xx), so nothing
  wrong reaches the queue.
* ``run`` runs in the queue worker with the engine. It gets the plan, the request's engine
  fields and a ``generate`` callable, and returns the images (grids first) to answer with.

No torch here; PIL is imported inside functions.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdcloud.client_numbers import finite_float
from sdcloud.errors import BadRequest

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class ScriptArg:
    """One positional argument, described as A1111's ``/sdapi/v1/script-info`` does."""

    label: str
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list[str] | None = None

    def info(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "minimum": self.minimum,
                "maximum": self.maximum, "step": self.step, "choices": self.choices}


@dataclass
class ScriptEnv:
    """What ``prepare`` may look up: names resolve here, in the API process, so a typo is a 4xx.

    Every resolver raises ``BadRequest``/``NotFound`` for an unknown name.
    """

    resolve_model: Callable[[str], str]  # checkpoint name/title/hash -> catalog key
    resolve_vae: Callable[[str], str | None]  # VAE name -> key (None: the model's own)
    resolve_sampler: Callable[[str, str | None], tuple[str, str]]  # (sampler, schedule) -> names
    apply_styles: Callable[[str, str, list[str]], tuple[str, str]]  # prompt, negative, styles
    upscalers: list[str]  # /sdapi/v1/upscalers names, in order (SD upscale's index)
    hr_upscalers: list[str]  # what hr_upscaler accepts
    checkpoints: list[str]  # titles for the axis choices
    vaes: list[str]
    samplers: list[str]
    schedules: list[str]
    styles: list[str]
    seed_was_random: bool = False  # the request asked for seed -1
    max_images: int = 400  # cells x images per cell
    face_restorer: Callable[[], str] | None = None  # the face restorer's name, checked to run here (4xx)


@dataclass
class ScriptOutput:
    """What a script's ``run`` hands back: images to answer with, grids first."""

    images: list[Any]
    infotexts: list[str]
    seeds: list[int]
    grid_count: int = 0  # how many of ``images`` (from the start) are grids
    grid_prefix: str = "grid"  # A1111's grid file name prefix (``xyz_grid``, ``prompt_matrix``)
    samples: list[Any] = field(default_factory=list)  # every generated image, saved as samples
    sample_infotexts: list[str] = field(default_factory=list)
    sample_seeds: list[int] = field(default_factory=list)
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)


# generate(fields, model_key | None, vae_key | "keep") -> GenerationResult
Generate = Callable[[dict[str, Any], "str | None", Any], Any]


class Script(ABC):
    """A selectable script; subclasses set ``title`` and implement ``args``, ``prepare`` and ``run``."""

    title: str = ""
    txt2img: bool = True
    img2img: bool = True

    @abstractmethod
    def args(self, is_img2img: bool, env: ScriptEnv | None = None) -> list[ScriptArg]:
        """The script's inputs, in A1111's ``script_args`` order."""

    @abstractmethod
    def prepare(self, args: Sequence[Any], fields: dict[str, Any], env: ScriptEnv,
                is_img2img: bool) -> dict[str, Any]:
        """Check ``args`` against the request (400 on bad input) and return the run's plan."""

    @abstractmethod
    def run(self, plan: dict[str, Any], fields: dict[str, Any], generate: Generate,
            init_images: list[Any]) -> ScriptOutput:
        """Carry out ``plan`` with ``generate`` (one generation per call)."""

    # helpers ---------------------------------------------------------------------------
    def positional(self, args: Sequence[Any], is_img2img: bool) -> list[Any]:
        """``args`` padded with the defaults of the arguments not sent (A1111 does the same
        with the UI's values); more arguments than the script takes is a 4xx."""
        spec = self.args(is_img2img)
        if not isinstance(args, (list, tuple)):
            raise BadRequest(f"script_args for '{self.title}' must be a list")
        if len(args) > len(spec):
            raise BadRequest(f"script '{self.title}' takes {len(spec)} script_args "
                             f"({', '.join(a.label for a in spec)}); got {len(args)}")
        return [*args, *(a.value for a in spec[len(args):])]


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise BadRequest(f"{name} must be true or false, got {value!r}")


def as_number(value: Any, name: str, lo: float, hi: float, kind: type = float) -> Any:
    number = finite_float(value, name)  # 1e400 (infinity) and NaN are refused, not overflowed
    number = int(number) if kind is int else kind(number)
    if not lo <= number <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {number}")
    return number


def as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """A choice given by its text (any case) or, as A1111's ``type="index"`` radios send it,
    by its position."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        for c in choices:
            if c.lower() == value.strip().lower():
                return c
    raise BadRequest(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED)
