"""A1111 "parameters" text (infotext): build it and parse it (``sdcloud.image_files`` stores it in
and reads it from images).

The format, written by A1111's ``create_infotext`` and read by ``parse_generation_parameters``::

    {prompt}
    Negative prompt: {negative prompt}
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, ...

This module reproduces both sides from the documented behaviour (see docs/infotext.md) so
that images made here paste into A1111 unchanged and A1111 images load here. It depends on
neither torch nor PIL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from sdcloud import __version__
from sdcloud.errors import BadRequest

VERSION = f"sdcloud-{__version__}"
"""Our ``Version`` value. Deliberately not PEP 440-parseable: A1111 readers turn on legacy
behaviour (old prompt-editing timelines, ...) for any parseable version below 1.8."""

MAX_INFOTEXT_CHARS = 64 * 1024
"""The most infotext read from an image or a request (A1111's largest real ones are a few KB);
longer text is refused before it is parsed (docs/security.md)."""

# A1111 reads the parameters line with ``\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)``
# (``findall``): a key starts with a word character and goes on with word characters, spaces,
# '-' or '/'; the value is a JSON-style double-quoted string or everything up to the next comma.
# That regex retries at every position of a long colon-free run and backtracks, quadratic in the
# length. ``_params`` gives the same matches in one pass; these pieces only ever match forward.
_WORD = re.compile(r"\w")
_KEY = re.compile(r"\w[\w \-/]*")
_SPACE = re.compile(r"\s*")
_QUOTE_OR_BACKSLASH = re.compile(r'["\\]')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"

MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
"""``Masked content`` labels, indexed by the API's ``inpainting_fill``."""

SCHEDULE_TYPE_LABELS = (
    "Automatic",
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "SGMUniform",  # alias of "SGM Uniform"
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
)
"""A1111 1.10 schedule-type labels and aliases: the suffixes split off legacy sampler names."""

# Defaults A1111 injects for labels an infotext leaves out (as strings: every parsed value is one).
_DEFAULTS: dict[str, str] = {
    "Clip skip": "1",
    "Hires resize-1": "0",
    "Hires resize-2": "0",
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": "32",
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": "0",
    "Schedule min sigma": "0",
    "Schedule rho": "0",
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": "False",
}


# ----------------------------------------------------------------------------- build


def number(value: object) -> object:
    """A float that is a whole number as an int (``7.0`` -> ``7``), as A1111's UI writes it:
    its sliders hand whole numbers over as ints, so its infotexts read ``CFG scale: 7`` and
    ``Hires upscale: 2``. Other values (``0.75``, ``True``, text) are unchanged."""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    return value


def quote(value: object) -> object:
    """A value as A1111 writes it: JSON-quoted if its text holds ``,``, a newline or ``:``."""
    value = number(value)
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return json.dumps(text, ensure_ascii=False)


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The ``parameters`` text for one image, byte for byte as A1111's ``create_infotext``.

    ``params`` is label -> value in output order (see :func:`generation_params`); ``None``
    values are left out, a value equal to its label is written as the bare label, and whole
    floats are written without ``.0`` (:func:`number`).
    """
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\n{_NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def add_param(text: str, label: str, value: object, after: str | None = None) -> str:
    """``text`` (an infotext) with ``label: value`` in its parameters line, placed after the
    ``after`` parameter as A1111 places it (``Face restoration`` after ``Seed``), else before
    ``Version``, else at the end. A label already there, or a text without a parameters line,
    is returned as is."""
    head, sep, last = text.rpartition("\n")
    params = _params(last)
    if len(params) < 3 or any(key == label for key, _ in params):
        return text
    item = f"{label}: {quote(value)}"

    def where(key: str | None) -> re.Match[str] | None:
        raw = next((v for k, v in params if k == key), None)
        return None if raw is None else re.search(rf"(?:^|, ){re.escape(str(key))}: {re.escape(raw)}(?=,|$)", last)

    found, version = where(after), where("Version")
    if found is not None:  # right after that parameter
        line = f"{last[:found.end()]}, {item}{last[found.end():]}"
    elif version is not None and version.start() > 0:  # before ", Version: ..."
        line = f"{last[:version.start()]}, {item}{last[version.start():]}"
    else:
        line = f"{last}, {item}"
    return f"{head}{sep}{line}"


def _format_hashes(hashes: Mapping[str, str] | None) -> str | None:
    """``name: hash, name2: hash``; like A1111, ``:`` and ``,`` are removed from the names."""
    if not hashes:
        return None
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {digest}" for name, digest in hashes.items())


def generation_params(
    *,
    steps: int,
    sampler: str,
    schedule_type: str | None,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_hash: str | None = None,
    model: str | None = None,
    vae_hash: str | None = None,
    vae: str | None = None,
    variation_seed: int | None = None,
    variation_seed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
    denoising_strength: float | None = None,
    clip_skip: int = 1,
    tiling: bool = False,
    hires_upscale: float | None = None,
    hires_resize: tuple[int, int] | None = None,
    hires_steps: int | None = None,
    hires_upscaler: str | None = None,
    hires_checkpoint: str | None = None,
    hires_sampler: str | None = None,
    hires_schedule_type: str | None = None,
    hires_prompt: str | None = None,
    hires_negative_prompt: str | None = None,
    mask_blur: int | None = None,
    inpainting_fill: int | None = None,
    inpaint_full_res: bool = False,
    inpaint_full_res_padding: int = 32,
    inpainting_mask_invert: bool = False,
    lora_hashes: Mapping[str, str] | None = None,
    ti_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
    version: str = VERSION,
) -> dict[str, object]:
    """Label -> value in A1111 1.10's order, with A1111's rules for what is left out.

    Pass the values actually used: the seed of this image, the first-pass ``width``/``height``
    when hires fix runs, the real schedule label (``"Karras"`` for DPM++ 2M on Automatic).
    Hires fields are written only when given (``hires_upscale`` xor ``hires_resize``; leave
    ``hires_sampler``/``hires_prompt`` as None when they equal the first pass). Img2img
    fields follow A1111: ``Mask blur`` when a mask was used, ``Masked content`` unless
    "original", ``Inpaint area``/``Masked area padding`` only for "Only masked", ``Mask mode``
    only when inverted. ``extra`` labels go after the known ones, before ``Version``.
    """
    use_variation = variation_seed_strength != 0
    params: dict[str, object] = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": cfg_scale,
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model,
        "VAE hash": vae_hash,
        "VAE": vae,
        "Variation seed": variation_seed if use_variation else None,
        "Variation seed strength": variation_seed_strength if use_variation else None,
        "Seed resize from": (
            f"{seed_resize_from[0]}x{seed_resize_from[1]}"
            if seed_resize_from and seed_resize_from[0] > 0 and seed_resize_from[1] > 0
            else None
        ),
        "Denoising strength": denoising_strength,
        "Clip skip": clip_skip if clip_skip > 1 else None,
        "Tiling": "True" if tiling else None,
        "Hires upscale": hires_upscale if hires_resize is None else None,
        "Hires resize": f"{hires_resize[0]}x{hires_resize[1]}" if hires_resize else None,
        "Hires steps": hires_steps or None,
        "Hires upscaler": hires_upscaler,
        "Hires checkpoint": hires_checkpoint,
        "Hires sampler": hires_sampler,
        "Hires schedule type": hires_schedule_type,
        "Hires prompt": hires_prompt,
        "Hires negative prompt": hires_negative_prompt,
        "Mask blur": mask_blur,
        "Masked content": (
            MASKED_CONTENT[inpainting_fill]
            if mask_blur is not None and inpainting_fill not in (None, 1)
            else None
        ),
        "Inpaint area": "Only masked" if mask_blur is not None and inpaint_full_res else None,
        "Masked area padding": (
            inpaint_full_res_padding if mask_blur is not None and inpaint_full_res else None
        ),
        "Mask mode": "Inpaint not masked" if mask_blur is not None and inpainting_mask_invert else None,
        "Lora hashes": _format_hashes(lora_hashes),
        "TI hashes": _format_hashes(ti_hashes),
    }
    for key, value in (extra or {}).items():
        params.setdefault(key, value)
    params["Version"] = version
    return {k: v for k, v in params.items() if v is not None}


# ----------------------------------------------------------------------------- parse


def _unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _version_tuple(text: str | None) -> tuple[int, int, int, int] | None:
    """``v1.7.0-225-gabc`` -> (1, 7, 0, 225); None for what A1111 cannot parse either."""
    if not text:
        return None
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-(\d+)(?:-.*)?)?", text.strip())
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0)


def _backcompat(res: dict[str, str]) -> None:
    """Flags A1111 adds for infotexts written by older versions (``infotext_versions``)."""
    version = _version_tuple(res.get("Version"))
    if version is None:
        return
    if version < (1, 6, 0, 0) and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = "True"
    if version < (1, 6, 0, 0) and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = "True"
    if version < (1, 7, 0, 225):
        res["Downcast alphas_cumprod"] = "True"
    if version < (1, 8, 0, 0) and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = "True"


def _old_hires_first_pass(width: int, height: int) -> tuple[int, int]:
    """Pre-1.0 hires fix: the first pass had ~512x512 pixels, sides rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix(res: dict[str, str]) -> None:
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    fw, fh = int(first_w), int(first_h)
    if fw == 0 or fh == 0:
        fw, fh = _old_hires_first_pass(width, height)
    res["Size-1"], res["Size-2"] = str(fw), str(fh)
    res["Hires resize-1"], res["Hires resize-2"] = str(width), str(height)


def _quoted_end(text: str, start: int) -> int | None:
    """End (exclusive) of the quoted value opening at ``text[start] == '"'``, or None.

    The regex's ``"(?:\\.|[^\\"])+"``: a backslash escapes any character but a new line, the
    first unescaped quote closes, and at least one character is inside."""
    pos = start + 1
    while True:
        m = _QUOTE_OR_BACKSLASH.search(text, pos)
        if m is None:
            return None
        at = m.start()
        if text[at] == '"':
            return at + 1 if at > start + 1 else None
        if at + 1 >= len(text) or text[at + 1] == "\n":
            return None
        pos = at + 2


def _params(line: str) -> list[tuple[str, str]]:
    """``(key, raw value)`` pairs of a parameters line, exactly as A1111's ``re_param.findall``,
    in time linear in the line's length."""
    n = len(line)
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < n:
        word = _WORD.search(line, pos)  # a match can only start its key at a word character
        if word is None:
            break
        key_start = word.start()
        key_end = _KEY.match(line, key_start).end()  # type: ignore[union-attr]
        if key_end - key_start < 2 or key_end >= n or line[key_end] != ":":
            pos = key_end  # every start inside this run ends the key at the same place: no match
            continue
        value_start = _SPACE.match(line, key_end + 1).end()  # type: ignore[union-attr]
        end = _quoted_end(line, value_start) if value_start < n and line[value_start] == '"' else None
        if end is not None and (end == n or line[end] == "," or (end == n - 1 and line[end] == "\n")):
            out.append((line[key_start:key_end], line[value_start:end]))
            pos = end + 1 if end < n and line[end] == "," else end
            continue
        comma = line.find(",", value_start)
        value_end = n if comma < 0 else comma
        out.append((line[key_start:key_end], line[value_start:value_end]))
        pos = n if comma < 0 else comma + 1
    return out


def check_infotext_size(text: str, what: str = "infotext") -> None:
    """Refuse text over :data:`MAX_INFOTEXT_CHARS` with a one-line 400 before anything parses it."""
    if len(text) > MAX_INFOTEXT_CHARS:
        raise BadRequest(
            f"{what} is {len(text)} characters; at most {MAX_INFOTEXT_CHARS} are read "
            "(A1111 infotexts are a few KB; see docs/security.md)"
        )


def parse_infotext(text: str) -> dict[str, str]:
    """Parse any A1111 infotext into label -> value, as A1111's ``parse_generation_parameters``.

    ``Prompt`` and ``Negative prompt`` are always present; ``WxH`` values are split into
    ``<label>-1``/``<label>-2``; quoted values are JSON-decoded; labels an A1111 infotext may
    omit get A1111's defaults. Every value is a string.
    """
    *lines, last = text.strip().split("\n")
    params = _params(last)
    if len(params) < 3:
        lines.append(last)
        params = []

    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE) :].strip()
        target = negative if in_negative else prompt
        if target or line:
            target.append(line)

    res: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in params:
        if not value:  # A1111 drops "Key: ," (its parser fails on the empty value)
            continue
        value = _unquote(value)
        size = _IMAGE_SIZE.match(value)
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size[1], size[2]
        else:
            res[key] = value

    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    _restore_old_hires_fix(res)
    for key, default in _DEFAULTS.items():
        res.setdefault(key, default)
    if res["FP8 weight"] != "Disable":
        res.setdefault("Cache FP16 weight for LoRA", "False")
    if "Emphasis" not in res and _uses_emphasis(res["Prompt"], res["Negative prompt"]):
        res["Emphasis"] = "Original"
    _backcompat(res)
    return res


_OPEN_BRACKET = re.compile(r"(?<!\\)[(\[]")
_EMPHASIS_WORK = 2_000_000
"""Brackets x characters above which :func:`_uses_emphasis` does not run A1111's attention
parser: it multiplies every piece after a bracket at each close, quadratic on hostile text
such as 30000 unclosed brackets. Real prompts stay orders of magnitude below."""


def _uses_emphasis(*prompts: str) -> bool:
    from sdcloud.prompt_syntax import parse_prompt_attention

    brackets = sum(len(_OPEN_BRACKET.findall(p)) for p in prompts)
    if brackets * sum(len(p) for p in prompts) > _EMPHASIS_WORK:
        return True  # that many brackets are emphasis for all practical purposes
    return any(
        weight != 1.0 and text != "BREAK" for p in prompts for text, weight in parse_prompt_attention(p)
    )


def parse_name_hashes(value: str) -> dict[str, str]:
    """``"detail: e3f9c2b1a8d7, style: 0123456789ab"`` (Lora/TI hashes) -> {name: hash}."""
    result: dict[str, str] = {}
    for item in value.split(","):
        name, sep, digest = item.rpartition(":")
        if sep and name.strip():
            result[name.strip()] = digest.strip()
    return result


# ----------------------------------------------------------------------------- to request fields

_INT_FIELDS = {
    "Steps": "steps",
    "Seed": "seed",
    "Variation seed": "subseed",
    "Seed resize from-1": "seed_resize_from_w",
    "Seed resize from-2": "seed_resize_from_h",
    "Size-1": "width",
    "Size-2": "height",
    "Batch size": "batch_size",
    "Hires steps": "hr_second_pass_steps",
    "Hires resize-1": "hr_resize_x",
    "Hires resize-2": "hr_resize_y",
    "Clip skip": "clip_skip",
    "Mask blur": "mask_blur",
    "Masked area padding": "inpaint_full_res_padding",
}
_FLOAT_FIELDS = {
    "CFG scale": "cfg_scale",
    "Variation seed strength": "subseed_strength",
    "Denoising strength": "denoising_strength",
    "Hires upscale": "hr_scale",
    "Noise multiplier": "initial_noise_multiplier",
    "Refiner switch at": "refiner_switch_at",
    "Sigma churn": "s_churn",
    "Sigma tmin": "s_tmin",
    "Sigma tmax": "s_tmax",
    "Sigma noise": "s_noise",
    "NGMS": "s_min_uncond",
}
_STR_FIELDS = {
    "Prompt": "prompt",
    "Negative prompt": "negative_prompt",
    "Hires upscaler": "hr_upscaler",
    "Hires prompt": "hr_prompt",
    "Hires negative prompt": "hr_negative_prompt",
    "Model": "model",
    "Model hash": "model_hash",
    "VAE": "vae",
    "Refiner": "refiner_checkpoint",
}
# Labels whose "same as first pass" sentinel means "not set".
_SAME_AS_FIRST = {
    "Hires sampler": ("hr_sampler_name", "Use same sampler"),
    "Hires schedule type": ("hr_scheduler", "Use same scheduler"),
    "Hires checkpoint": ("hr_checkpoint_name", "Use same checkpoint"),
}
_HIRES_MARKERS = ("Hires upscale", "Hires upscaler", "Hires resize-1")


def split_sampler_name(sampler: str, schedule_type: str = "Automatic") -> tuple[str, str]:
    """``("DPM++ 2M Karras", ...)`` -> ``("DPM++ 2M", "Karras")``: a legacy schedule suffix wins."""
    for label in SCHEDULE_TYPE_LABELS:
        if sampler.endswith(" " + label):
            return sampler[: -len(label) - 1], "SGM Uniform" if label == "SGMUniform" else label
    return sampler, schedule_type


def infotext_to_request_fields(parsed: Mapping[str, str]) -> dict[str, Any]:
    """Parsed infotext -> GenerationRequest/API field values with their proper types.

    Labels that map to no field, and values that do not convert (``Steps: abc``), are kept
    as text under ``"extra"``; defaults that :func:`parse_infotext` injected are not.
    """
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for label, value in parsed.items():
        try:
            if label in _INT_FIELDS:
                fields[_INT_FIELDS[label]] = int(value)
            elif label in _FLOAT_FIELDS:
                fields[_FLOAT_FIELDS[label]] = float(value)
            elif label in _STR_FIELDS:
                fields[_STR_FIELDS[label]] = value
            elif label in _SAME_AS_FIRST:
                name, same = _SAME_AS_FIRST[label]
                fields[name] = None if value == same else value
            elif label == "Masked content":
                fields["inpainting_fill"] = MASKED_CONTENT.index(value)
            elif label == "Inpaint area":
                fields["inpaint_full_res"] = value == "Only masked"
            elif label == "Mask mode":
                fields["inpainting_mask_invert"] = int(value == "Inpaint not masked")
            elif label not in ("Sampler", "Schedule type") and _DEFAULTS.get(label) != value:
                extra[label] = value
        except ValueError:
            extra[label] = value

    if "Sampler" in parsed:
        fields["sampler_name"], fields["scheduler"] = split_sampler_name(
            parsed["Sampler"], parsed.get("Schedule type", "Automatic")
        )
    elif "Schedule type" in parsed:
        fields["scheduler"] = parsed["Schedule type"]
    hires_given = any(
        parsed.get(k) not in (None, "0") if k == "Hires resize-1" else k in parsed for k in _HIRES_MARKERS
    )
    if "Denoising strength" in parsed and hires_given:
        fields["enable_hr"] = True
    fields["extra"] = extra
    return fields
