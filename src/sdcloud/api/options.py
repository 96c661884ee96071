"""The A1111 options (``/sdapi/v1/options``), kept in ``<state>/options.json``.

Every key of A1111 1.10's settings is answered (``a1111_options``), so a POST may send back
the whole dict GET returned. ``DEFAULTS`` are the options this server acts on: checked
strictly (a wrong type or range is a ``BadRequest``). Every other A1111 key is stored and
read back as A1111 keeps it (a value of another kind than A1111's default is refused).
Keys A1111 does not have are ignored. ``sd_model_checkpoint`` and ``sd_checkpoint_hash`` are
not stored here: they describe the loaded model.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from sdcloud.api.a1111_options import A1111_DEFAULTS
from sdcloud.errors import BadRequest

SAMPLE_FORMATS = ("png", "jpg", "jpeg", "webp")

DEFAULTS: dict[str, Any] = {
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "samples_format": "png",
    "jpeg_quality": 80,
    "return_grid": True,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 10,
    "face_restoration_model": "CodeFormer",  # what restore_faces uses (A1111's default)
    "refiner_switch_by_sample_steps": False,  # the refiner switches by steps done, not timestep
    "hires_fix_refiner_pass": "second pass",  # which passes of a hires-fix request the refiner joins
}
REFINER_PASSES = ("first pass", "second pass", "both passes")

COMPUTED = ("sd_model_checkpoint", "sd_checkpoint_hash")  # describe the loaded model, never stored

_RANGES: dict[str, tuple[int, int]] = {
    "CLIP_stop_at_last_layers": (1, 12),
    "jpeg_quality": (1, 100),
    "show_progress_every_n_steps": (-1, 1000),
}


class OptionsStore:
    """Thread-safe option values, persisted atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values = {k: v for k, v in {**A1111_DEFAULTS, **DEFAULTS}.items() if k not in COMPUTED}
        try:
            stored = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            stored = {}
        if isinstance(stored, dict):
            for key, value in stored.items():
                try:
                    self._values.update(validate({key: value}))
                    self._values.update(validate_kept({key: value}))
                except BadRequest:
                    continue  # a hand-edited file with a bad value falls back to the default

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return self._values[key]

    def update(self, changes: dict[str, Any]) -> None:
        """Validate and store ``changes`` (keys A1111 does not have are dropped)."""
        clean = {**validate_kept(changes), **validate(changes)}
        if not clean:
            return
        with self._lock:
            self._values.update(clean)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as fh:
                json.dump(self._values, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)


def validate(changes: dict[str, Any]) -> dict[str, Any]:
    """The known keys of ``changes`` with values checked against the defaults' types."""
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in DEFAULTS:
            continue
        default = DEFAULTS[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and isinstance(value, float) and value.is_integer():
                value, ok = int(value), True
        else:
            ok = isinstance(value, str)
        if not ok:
            raise BadRequest(f"option '{key}' must be {type(default).__name__}, got {value!r}")
        if key in _RANGES and not _RANGES[key][0] <= value <= _RANGES[key][1]:
            lo, hi = _RANGES[key]
            raise BadRequest(f"option '{key}' must be between {lo} and {hi}, got {value}")
        if key == "hires_fix_refiner_pass" and value not in REFINER_PASSES:
            raise BadRequest(f"hires_fix_refiner_pass must be one of {', '.join(REFINER_PASSES)}, got {value!r}")
        if key == "samples_format" and value.lower() not in SAMPLE_FORMATS:
            raise BadRequest(f"samples_format must be one of {', '.join(SAMPLE_FORMATS)}, got {value!r}")
        clean[key] = value.lower() if key == "samples_format" else value
    return clean


def validate_kept(changes: dict[str, Any]) -> dict[str, Any]:
    """The A1111 keys of ``changes`` this server keeps without acting on them, checked to be of
    the kind of A1111's default (a number for a number, a list for a list, ...)."""
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key in DEFAULTS or key in COMPUTED or key not in A1111_DEFAULTS:
            continue
        default = A1111_DEFAULTS[key]
        if default is None or value is None:
            ok = value is None or isinstance(value, (str, int, float, bool))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):  # 1e400 (infinity) and NaN are no setting
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                isinstance(value, int) or math.isfinite(value))
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise BadRequest(f"option '{key}' must be like its A1111 default {default!r}, got {value!r}")
        clean[key] = value
    return clean
