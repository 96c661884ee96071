"""Pure helpers between the UI controls and A1111 request fields (no Gradio, no torch).

The UI speaks A1111's API vocabulary: every control is named after the request field it
fills (``steps``, ``cfg_scale``, ``hr_scale`` ...), so a form is a plain ``dict`` that goes
to the same service functions the HTTP API calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sdcloud.client_numbers import finite_float, whole_number
from sdcloud.engine.request_rules import HIRES_DENOISE, IMG2IMG_DENOISE
from sdcloud.infotext import MASKED_CONTENT, infotext_to_request_fields
from sdcloud.settings import Limits

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINT_AREAS = ("Whole picture", "Only masked")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
# A1111's dropdown words for "as the first pass" / "no refiner" (the API takes them too)
SAME_CHECKPOINT = "Use same checkpoint"
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"
NO_REFINER = "None"

_LORA_RE = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")


@dataclass(frozen=True)
class Ranges:
    """Upper bounds of the sliders, taken from the server's input limits (defaults: the
    settings' own defaults)."""

    max_width: int = Limits.max_width
    max_height: int = Limits.max_height
    max_steps: int = Limits.max_steps
    max_batch_size: int = Limits.max_batch_size
    max_n_iter: int = Limits.max_n_iter

    @classmethod
    def from_limits(cls, limits: Any) -> Ranges:
        return cls(**{name: int(getattr(limits, name)) for name in cls.__dataclass_fields__
                      if hasattr(limits, name)})


def insert_lora(prompt: str, name: str, weight: float = 1.0) -> str:
    """Append ``<lora:name:weight>`` to ``prompt`` as A1111's extra-networks card does.

    A LoRA already in the prompt is left as it is (clicking its card twice must not stack
    it); the tag is separated from the text by ``", "`` unless the prompt already ends
    with a comma.
    """
    name = name.strip()
    if not name:
        return prompt
    if any(m.group(1) == name for m in _LORA_RE.finditer(prompt)):
        return prompt
    tag = f"<lora:{name}:{_fmt_number(weight)}>"
    text = prompt.rstrip()
    if not text:
        return tag
    sep = " " if text.endswith(",") else ", "
    return f"{text}{sep}{tag}"


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def snap_size(value: int, high: int) -> int:
    """Round to the size sliders' step of 8 and keep it in 64..high."""
    return int(_clamp(round(value / 8) * 8, 64, high))


def infotext_to_txt2img(params: Mapping[str, Any], *, ranges: Ranges | None = None) -> dict[str, Any]:
    """Map a PNG's parsed infotext (the ``parameters`` of A1111's ``png-info``: label → text)
    to txt2img control values, keyed by A1111 request field name.

    The label → field mapping is the shared one in :mod:`sdcloud.infotext`; this keeps the
    fields the txt2img tab has and fits numbers into its sliders. Labels absent from the
    text are absent from the result, so "Send to txt2img" leaves those controls alone.
    """
    r = ranges or Ranges()
    fields = infotext_to_request_fields({str(k): str(v) for k, v in params.items()})
    fit: dict[str, Callable[[Any], Any]] = {
        "prompt": str,
        "negative_prompt": str,
        "sampler_name": str,
        "scheduler": str,
        "steps": lambda v: int(_clamp(v, 1, r.max_steps)),
        "cfg_scale": lambda v: _clamp(v, 1.0, 30.0),
        "seed": int,
        "width": lambda v: snap_size(v, r.max_width),
        "height": lambda v: snap_size(v, r.max_height),
        "batch_size": lambda v: int(_clamp(v, 1, r.max_batch_size)),
        "enable_hr": bool,
        "denoising_strength": lambda v: _clamp(v, 0.0, 1.0),
        "hr_scale": lambda v: _clamp(v, 1.0, 4.0),
        "hr_upscaler": str,
        "hr_second_pass_steps": lambda v: int(_clamp(v, 0, r.max_steps)),
        "hr_resize_x": lambda v: snap_size(v, r.max_width) if v else 0,
        "hr_resize_y": lambda v: snap_size(v, r.max_height) if v else 0,
        "hr_checkpoint_name": lambda v: v or SAME_CHECKPOINT,
        "hr_sampler_name": lambda v: v or SAME_SAMPLER,
        "hr_scheduler": lambda v: v or SAME_SCHEDULER,
        "hr_prompt": str,
        "hr_negative_prompt": str,
        "refiner_checkpoint": str,
        "refiner_switch_at": lambda v: _clamp(v, 0.01, 1.0),
    }
    values = {key: fit[key](value) for key, value in fields.items() if key in fit}
    values.setdefault("refiner_checkpoint", NO_REFINER)  # A1111: no "Refiner" label turns the refiner off
    return values


def match_checkpoint(name: str, titles: Iterable[str]) -> str | None:
    """The dropdown title (``sub/name.safetensors [hash]``) of a checkpoint an infotext names as
    A1111 writes it (``name [hash]``, ``name``); None if this server has none of that name."""
    def bare(text: str) -> str:
        text = text[: text.rindex(" [")] if text.endswith("]") and " [" in text else text
        stem = text.replace("\\", "/").rsplit("/", 1)[-1]
        return stem.rsplit(".", 1)[0] if stem.lower().endswith((".safetensors", ".ckpt", ".pt")) else stem

    titles = list(titles)
    if name in titles:
        return name
    return next((t for t in titles if bare(t) == bare(name)), None)


def _int(form: Mapping[str, Any], key: str, default: int) -> int:
    """A form number as an int; a value such as 1e400 is a one-line error naming the field."""
    return whole_number(form.get(key, default), key)


def _float(form: Mapping[str, Any], key: str, default: float) -> float:
    return finite_float(form.get(key, default), key)


def txt2img_request(form: Mapping[str, Any]) -> dict[str, Any]:
    """A1111 ``/sdapi/v1/txt2img`` body from the txt2img form (control name → value)."""
    req: dict[str, Any] = {
        "prompt": form.get("prompt") or "",
        "negative_prompt": form.get("negative_prompt") or "",
        "sampler_name": form.get("sampler_name") or "Euler",
        "scheduler": form.get("scheduler") or "Automatic",
        "steps": _int(form, "steps", 20),
        "cfg_scale": _float(form, "cfg_scale", 7.0),
        "width": _int(form, "width", 512),
        "height": _int(form, "height", 512),
        "seed": _seed(form.get("seed")),
        "batch_size": _int(form, "batch_size", 1),
        "n_iter": _int(form, "n_iter", 1),
        "save_images": True,
    }
    if form.get("enable_hr"):
        req.update({
            "enable_hr": True,
            "hr_scale": _float(form, "hr_scale", 2.0),
            "hr_upscaler": form.get("hr_upscaler") or "Latent",
            "hr_second_pass_steps": _int(form, "hr_second_pass_steps", 0),
            "hr_resize_x": _int(form, "hr_resize_x", 0),
            "hr_resize_y": _int(form, "hr_resize_y", 0),
            "denoising_strength": _float(form, "denoising_strength", HIRES_DENOISE),
            "hr_checkpoint_name": form.get("hr_checkpoint_name") or SAME_CHECKPOINT,
            "hr_sampler_name": form.get("hr_sampler_name") or SAME_SAMPLER,
            "hr_scheduler": form.get("hr_scheduler") or SAME_SCHEDULER,
            "hr_prompt": form.get("hr_prompt") or "",
            "hr_negative_prompt": form.get("hr_negative_prompt") or "",
        })
    if form.get("refiner_checkpoint") not in (None, "", NO_REFINER):
        req.update({"refiner_checkpoint": form["refiner_checkpoint"],
                    "refiner_switch_at": _float(form, "refiner_switch_at", 0.8)})
    return req


def img2img_request(form: Mapping[str, Any], init_image: str, mask: str | None = None) -> dict[str, Any]:
    """A1111 ``/sdapi/v1/img2img`` body: the common fields plus init image, resize mode,
    denoising and, with a mask, the inpaint fields. Images are base64 PNG strings."""
    req = txt2img_request({k: v for k, v in form.items() if k != "enable_hr"})
    req.update({
        "init_images": [init_image],
        "denoising_strength": _float(form, "denoising_strength", IMG2IMG_DENOISE),
        "resize_mode": _index(RESIZE_MODES, form.get("resize_mode"), 0),
    })
    if mask is not None:
        req.update({
            "mask": mask,
            "mask_blur": _int(form, "mask_blur", 4),
            "inpainting_fill": _index(MASKED_CONTENT, form.get("inpainting_fill"), 1),
            "inpaint_full_res": form.get("inpaint_area") == INPAINT_AREAS[1],
            "inpaint_full_res_padding": _int(form, "inpaint_full_res_padding", 32),
            "inpainting_mask_invert": _index(MASK_MODES, form.get("mask_mode"), 0),
        })
    return req


def _index(choices: tuple[str, ...], value: Any, default: int) -> int:
    return choices.index(value) if value in choices else default


def _seed(value: Any) -> int:
    try:
        seed = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return -1
    return seed if seed >= 0 else -1


def seed_of(info: Mapping[str, Any] | None, index: int | None = None) -> int:
    """The seed of gallery image ``index`` (A1111 ``info`` dict), for the Reuse button; -1 if none."""
    if not info:
        return -1
    seeds = info.get("all_seeds") or []
    offset = int(info.get("index_of_first_image", 0) or 0)
    i = (index or 0) - offset
    if seeds and 0 <= i < len(seeds):
        return int(seeds[i])
    return int(info.get("seed", -1) if info.get("seed") is not None else -1)


def infotext_of(info: Mapping[str, Any] | None, index: int | None = None) -> str:
    """The infotext shown under the gallery for the selected image."""
    if not info:
        return ""
    texts = info.get("infotexts") or []
    i = index or 0
    if 0 <= i < len(texts):
        return str(texts[i])
    return str(texts[0]) if texts else ""


def image_to_send(result: Mapping[str, Any] | None, index: int | None) -> str | None:
    """The gallery image "Send to img2img/inpaint" takes: the selected one, but never the grid
    (a batch shows its grid first; selecting nothing, or the grid, sends the first image)."""
    paths = list((result or {}).get("paths") or [])
    if not paths:
        return None
    first = int(((result or {}).get("info") or {}).get("index_of_first_image", 0) or 0)
    first = first if first < len(paths) else 0
    i = index if index is not None and first <= index < len(paths) else first
    return str(paths[i])


def fit_choices(values: Mapping[str, Any], allowed: Mapping[str, Iterable[str]]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``values`` into (kept, dropped): a dropdown value this server does not offer
    (a sampler from another UI, an upscaler not installed) is dropped, not forced in."""
    kept, dropped = {}, {}
    for key, value in values.items():
        if key in allowed and value not in set(allowed[key]):
            dropped[key] = value
        else:
            kept[key] = value
    return kept, dropped
