"""ControlNet units between the API and the job queue: validated and their images stored as
job files when a request is queued (torch-free), rebuilt with their images in the worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.controlnet import models, preprocessors
from sdcloud.controlnet.units import ControlUnit, parse_units
from sdcloud.errors import BadRequest

SCRIPT = "controlnet"


def script_key(alwayson: dict[str, Any]) -> str | None:
    return next((k for k in alwayson if k.lower() == SCRIPT), None)


def prepare(alwayson: dict[str, Any], folder: Path, decode: Callable[[str, str], Any], img2img: bool
            ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """(units for the job payload, image files) from ``alwayson_scripts``; 4xx on bad units:
    an unknown model or module is a 422 listing the available ones."""
    from sdcloud.image_files import image_bytes

    key = script_key(alwayson)
    if key is None:
        return [], {}
    entries: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for i, unit in enumerate(parse_units(alwayson[key])):
        models.resolve(folder, unit.model)
        unit.module = preprocessors.check(unit.module, folder / "annotators")
        preprocessors.check_thresholds(unit.module, unit.threshold_a, unit.threshold_b, f"ControlNet unit {i}")
        entry = unit.to_json()
        if unit.image is None and not img2img:
            raise BadRequest(f"ControlNet unit {i} has no image (txt2img needs one per unit)")
        for part in ("image", "mask"):
            value = getattr(unit, part)
            if value is not None:
                name = f"controlnet-{i}-{part}.png"
                files[name] = image_bytes(decode(value, f"ControlNet unit {i} {part}"))
                entry[part] = name
        entries.append(entry)
    return entries, files


def load(entries: list[dict[str, Any]], input_path: Callable[[str], Path], load_image: Callable[[Path], Any]
         ) -> list[ControlUnit]:
    out = []
    for e in entries:
        fields = dict(e)
        for part in ("image", "mask"):
            if fields.get(part):
                fields[part] = load_image(input_path(fields[part]))
        out.append(ControlUnit(**fields))
    return out
