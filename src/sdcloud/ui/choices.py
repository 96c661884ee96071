"""What the dropdowns offer, read from the services (the same lists the API serves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdcloud.ui.params import Ranges


@dataclass(frozen=True)
class Choices:
    samplers: list[str]
    schedulers: list[str]
    upscalers: list[str]
    models: list[str]
    vaes: list[str]
    loras: list[str]
    styles: list[str]
    current_model: str | None
    current_vae: str
    ranges: Ranges


def load_choices(services: Any) -> Choices:
    """One snapshot of the lists (refreshed on page load and by the ↻ button)."""
    options = services.options_get()
    upscalers = [m["name"] for m in services.latent_upscale_modes()]
    upscalers += [u["name"] for u in services.upscalers()
                  if u["name"] not in upscalers and u["name"] != "None"]
    return Choices(
        samplers=[s["name"] for s in services.samplers()],
        schedulers=[s["label"] for s in services.schedulers()],
        upscalers=upscalers,
        models=[m["title"] for m in services.sd_models()],
        vaes=["Automatic", "None"] + [v["model_name"] for v in services.sd_vae()],
        loras=[lora["name"] for lora in services.loras()],
        styles=[s["name"] for s in services.prompt_styles()],
        current_model=options.get("sd_model_checkpoint") or None,
        current_vae=options.get("sd_vae") or "Automatic",
        ranges=Ranges.from_limits(services.settings.limits),
    )
