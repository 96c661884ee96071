"""Real runs feed ``sdcloud plan``: a generation observer that appends one throughput
measurement per finished job on a GPU the price catalog knows. The composition root
(``sdcloud.runtime``) hands it to the generation runner; the runner does not import it."""

from __future__ import annotations

from typing import Any

from sdcloud.engine.types import GenerationRequest, GenerationResult
from sdcloud.settings import Settings

_gpu_names: dict[str, str | None] = {}


def record_speed(settings: Settings, engine: Any, req: GenerationRequest, result: GenerationResult,
                 seconds: float) -> None:
    """One line per finished job on a catalog GPU (CPU runs, demo models, interrupted jobs,
    img2img and hires runs are not measurements of the planner's figure)."""
    current = getattr(engine, "current", None)
    if (getattr(engine, "device", None) is None or engine.device.type != "cuda" or current is None
            or current.is_demo or result.interrupted or not result.images or req.is_img2img or req.enable_hr):
        return
    import torch

    from sdcloud.cloud.price_catalog import load_price_catalog
    from sdcloud.cloud.throughput import record_measurement

    name = torch.cuda.get_device_name(engine.device)
    if name not in _gpu_names:
        _gpu_names[name] = load_price_catalog().gpu_for_device_name(name)
    gpu = _gpu_names[name]
    if gpu is None:
        return
    family = "sdxl" if current.family.startswith("sdxl") else "sd15"
    record_measurement(settings.state_path, gpu=gpu, family=family, steps=req.steps, width=req.width,
                       height=req.height, seconds=seconds / len(result.images))


class SpeedRecorder:
    """``record_speed`` as a ``GenerationObserver`` bound to one ``Settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, engine: Any, req: GenerationRequest, result: GenerationResult, seconds: float) -> None:
        record_speed(self.settings, engine, req, result, seconds)
