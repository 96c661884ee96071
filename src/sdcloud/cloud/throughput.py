"""How long one image takes on a GPU: a table per model family (with sources) that your own
measurements replace.

Time per image is modelled as ``steps / it_s * pixels / reference_pixels``: sampling time
grows with steps and (roughly linearly, at these sizes) with pixel count. The server records
each finished generation with :func:`record_measurement`; the planner then prefers the median
of your last runs on that GPU over the table.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest

FAMILIES = ("sd15", "sdxl")
MEASUREMENTS_FILE = "throughput.jsonl"
_RECENT = 20


@dataclass(frozen=True)
class Speed:
    it_s: float  # iterations per second at the family's reference size
    source: str


class ThroughputTable:
    def __init__(self, table: Mapping[str, Any], measurements: Path | None = None) -> None:
        self._families: Mapping[str, Any] = table.get("families", {})
        self._measured = _read_measurements(measurements, self._families) if measurements else {}

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted(self._families))

    def check_family(self, family: str) -> str:
        if family not in self._families:
            raise BadRequest(f"unknown model family {family!r}; use one of {', '.join(self.families)}")
        return family

    def speed(self, family: str, gpu: str) -> Speed | None:
        measured = self._measured.get((family, gpu))
        if measured:
            return Speed(statistics.median(measured), f"measured on this account ({len(measured)} runs)")
        entry = self._families.get(family, {}).get("gpus", {}).get(gpu)
        if entry is None:
            return None
        return Speed(float(entry["it_s"]), str(entry.get("source", "")))

    def seconds_per_image(
        self, family: str, gpu: str, steps: int, width: int, height: int
    ) -> tuple[float, str] | None:
        speed = self.speed(self.check_family(family), gpu)
        if speed is None:
            return None
        fam = self._families[family]
        scale = (width * height) / (fam["width"] * fam["height"])
        return steps / speed.it_s * scale, speed.source


def _read_measurements(path: Path, families: Mapping[str, Any]) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
            fam = families[rec["family"]]
            scale = (rec["width"] * rec["height"]) / (fam["width"] * fam["height"])
            it_s = rec["steps"] / rec["seconds"] * scale
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            continue  # a torn last line after a crash, or a family we no longer know
        if it_s > 0:
            out.setdefault((rec["family"], rec["gpu"]), []).append(it_s)
    return {k: v[-_RECENT:] for k, v in out.items()}


def record_measurement(
    state_dir: Path, *, gpu: str, family: str, steps: int, width: int, height: int, seconds: float
) -> None:
    """Append one finished generation (sampling time only) to ``state_dir/throughput.jsonl``.

    Called by the server after each image on a known GPU; one short line, appended and fsynced.
    """
    if seconds <= 0 or steps <= 0 or width <= 0 or height <= 0:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {
            "gpu": gpu,
            "family": family,
            "steps": steps,
            "width": width,
            "height": height,
            "seconds": round(seconds, 4),
        }
    )
    with open(state_dir / MEASUREMENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
