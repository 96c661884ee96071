"""A ControlNet unit as sd-webui-controlnet's API takes it (``alwayson_scripts.controlnet.args``)
and writes it into the infotext (``ControlNet 0: "Module: canny, Model: ..., Weight: 1, ..."``).

Torch-free: the API validates units before a job is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdcloud.client_numbers import finite_float, is_finite_number, whole_number
from sdcloud.errors import BadRequest

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
_LEGACY_RESIZE = {"Scale to Fit (Inner Fit)": 1, "Envelope (Outer Fit)": 2}


@dataclass
class ControlUnit:
    """One unit. ``image``/``mask`` are PIL images once decoded (base64 strings in the API)."""

    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Any = None
    mask: Any = None
    resize_mode: int = 1  # index into RESIZE_MODES (sd-webui-controlnet's default: Crop and Resize)
    processor_res: int = 512
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: int = 0  # index into CONTROL_MODES
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def infotext(self, model_title: str) -> str:
        """sd-webui-controlnet's serialisation (hidden slider values, -1, left out)."""
        items = [("Module", self.module), ("Model", model_title), ("Weight", _num(self.weight)),
                 ("Resize Mode", RESIZE_MODES[self.resize_mode]), ("Processor Res", self.processor_res),
                 ("Threshold A", _num(self.threshold_a)), ("Threshold B", _num(self.threshold_b)),
                 ("Guidance Start", _num(self.guidance_start)), ("Guidance End", _num(self.guidance_end)),
                 ("Pixel Perfect", self.pixel_perfect), ("Control Mode", CONTROL_MODES[self.control_mode])]
        return ", ".join(f"{k}: {v}" for k, v in items if v != -1)

    def to_json(self) -> dict[str, Any]:
        """The unit without its images (they travel as job files)."""
        return {k: getattr(self, k) for k in ("module", "model", "weight", "resize_mode", "processor_res",
                                              "threshold_a", "threshold_b", "guidance_start", "guidance_end",
                                              "pixel_perfect", "control_mode")}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def _enum(value: Any, names: tuple[str, ...], what: str, legacy: dict[str, int] | None = None) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"ControlNet {what} must be one of {', '.join(names)} or 0-{len(names) - 1}")
    if isinstance(value, int) and 0 <= value < len(names):
        return value
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if legacy and value in legacy:
            return legacy[value]
        if value.isdigit() and int(value) < len(names):
            return int(value)
    raise BadRequest(f"ControlNet {what} '{value}' is not one of: {', '.join(names)}")


def parse_unit(raw: Any, index: int) -> ControlUnit:
    """One element of ``args``: a dict in the API's field names (unknown keys ignored)."""
    if not isinstance(raw, dict):
        raise BadRequest(f"ControlNet unit {index} must be an object, got {type(raw).__name__}")
    unit = ControlUnit()
    where = f"ControlNet unit {index}"
    unit.enabled = bool(raw.get("enabled", True))
    unit.module = str(raw.get("module") or "none")
    unit.model = str(raw.get("model") or "None")
    unit.weight = finite_float(raw.get("weight", 1.0), f"{where}: weight")
    res = raw.get("processor_res", -1)
    unit.processor_res = 512 if res == -1 or res is None else whole_number(res, f"{where}: processor_res")
    unit.threshold_a = finite_float(raw.get("threshold_a", -1), f"{where}: threshold_a")
    unit.threshold_b = finite_float(raw.get("threshold_b", -1), f"{where}: threshold_b")
    unit.guidance_start = finite_float(raw.get("guidance_start", 0.0), f"{where}: guidance_start")
    unit.guidance_end = finite_float(raw.get("guidance_end", 1.0), f"{where}: guidance_end")
    unit.pixel_perfect = bool(raw.get("pixel_perfect", False))
    unit.resize_mode = _enum(raw.get("resize_mode", 1), RESIZE_MODES, "resize_mode", _LEGACY_RESIZE)
    unit.control_mode = _enum(raw.get("control_mode", 0), CONTROL_MODES, "control_mode")
    image = raw.get("image", raw.get("input_image"))
    if isinstance(image, dict):  # {"image": b64, "mask": b64}
        unit.mask = image.get("mask")
        image = image.get("image")
    unit.image = image or None
    unit.mask = raw.get("mask") or raw.get("mask_image") or unit.mask
    if not 0 <= unit.weight <= 2:
        raise BadRequest(f"ControlNet unit {index}: weight must be between 0 and 2, got {unit.weight}")
    if not 0 <= unit.guidance_start <= unit.guidance_end <= 1:
        raise BadRequest(f"ControlNet unit {index}: need 0 <= guidance_start <= guidance_end <= 1")
    if not 64 <= unit.processor_res <= 2048:
        raise BadRequest(f"ControlNet unit {index}: processor_res must be between 64 and 2048")
    return unit


def parse_units(script: Any) -> list[ControlUnit]:
    """``alwayson_scripts["controlnet"]`` -> the enabled units."""
    args = script.get("args") if isinstance(script, dict) else script
    if args is None:
        return []
    if not isinstance(args, list):
        raise BadRequest("alwayson_scripts.controlnet.args must be a list of units")
    units = [parse_unit(raw, i) for i, raw in enumerate(args)]
    return [u for u in units if u.enabled and u.model not in ("None", "")]  # no model: a preview only


_INFOTEXT_FIELDS = {"Module": "module", "Model": "model", "Weight": "weight", "Resize Mode": "resize_mode",
                    "Processor Res": "processor_res", "Threshold A": "threshold_a", "Threshold B": "threshold_b",
                    "Guidance Start": "guidance_start", "Guidance End": "guidance_end",
                    "Pixel Perfect": "pixel_perfect", "Control Mode": "control_mode"}


def unit_from_infotext(text: str) -> dict[str, Any]:
    """A ``ControlNet N`` infotext value (``Module: canny, Model: ..., Weight: 1, ...``) back to an
    API unit (no image), as the extension restores a unit from PNG Info. Unknown items are left out."""
    unit: dict[str, Any] = {}
    for item in text.strip().strip('"').split(", "):
        label, sep, value = item.partition(": ")
        key = _INFOTEXT_FIELDS.get(label.strip())
        if not sep or key is None:
            continue
        value = value.strip()
        if key in ("module", "model", "resize_mode", "control_mode"):
            unit[key] = value
        elif key == "pixel_perfect":
            unit[key] = value.lower() == "true"
        elif key == "processor_res":
            unit[key] = int(float(value)) if is_finite_number(value) else 512
        elif is_finite_number(value):
            unit[key] = float(value)
    return unit
