"""The words the UI shows for the API's internal names: options, job kinds and states, LoRA
learning-rate schedulers. The API keeps its names; only what the page shows changes (choices
are ``(label, value)`` pairs, so the value sent is the API's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPTION_LABELS: dict[str, str] = {
    "CLIP_stop_at_last_layers": "Clip skip",
    "samples_format": "File format for images",
    "jpeg_quality": "Quality for saved jpeg and webp images",
    "return_grid": "Show grid in results (batches)",
    "live_previews_enable": "Show live previews of the created image",
    "show_progress_every_n_steps": "Live preview display period (sampling steps)",
    "sd_model_checkpoint": "Stable Diffusion checkpoint",
    "sd_vae": "SD VAE",
    "face_restoration_model": "Face restoration model",
    "eta_noise_seed_delta": "Eta noise seed delta",
    "sigma_min": "Schedule min sigma",
    "sigma_max": "Schedule max sigma",
    "rho": "Schedule rho",
    "skip_early_cond": "Skip Early CFG",
    "s_min_uncond_all": "NGMS all steps",
    "refiner_switch_by_sample_steps": "Refiner switch by sampling steps",
    "hires_fix_refiner_pass": "Hires refiner",
    "always_discard_next_to_last_sigma": "Discard penultimate sigma",
}
"""A1111 option keys as A1111's Settings page (or its infotext) names them."""

INFOTEXT_SETTINGS = ("Clip skip", "VAE", "Schedule min sigma", "Schedule max sigma", "Schedule rho",
                     "Skip Early CFG", "NGMS all steps", "Discard penultimate sigma")
"""Infotext fields that are settings, not fields of the txt2img form (A1111 lists them under
"Override settings")."""


def settings_note(params: Mapping[str, Any]) -> str:
    """What "Send to txt2img" cannot put in the form: "Settings in the image, not sent: Clip
    skip 2 (change them under Settings)"; "" when there are none."""
    found = [f"{label} {params[label]}" for label in INFOTEXT_SETTINGS if str(params.get(label, "")).strip()]
    if not found:
        return ""
    return "Settings in the image, not sent: " + ", ".join(found) + " (change them under Settings)"


JOB_KINDS: dict[str, str] = {"ckpt-merge": "Merge", "ckpt-convert": "Convert", "ckpt-prune": "Prune",
                             "ckpt-lora-bake": "LoRA bake", "train-lora": "Train LoRA"}
"""Job kinds as the UI names them (txt2img and img2img as they are)."""

JOB_STATES: dict[str, str] = {"queued": "Queued", "running": "Running", "done": "Done", "failed": "Failed",
                              "cancelled": "Cancelled"}

LR_SCHEDULERS: list[tuple[str, str]] = [
    ("Constant", "constant"), ("Constant with warmup", "constant_with_warmup"), ("Linear", "linear"),
    ("Cosine", "cosine"), ("Cosine with restarts", "cosine_with_restarts")]
"""The Train tab's learning-rate schedulers: (label shown, the training option's value)."""


def option_label(key: str) -> str:
    """The option's name on A1111's Settings page; an option without one keeps its key (it is
    what the user typed in the JSON editor)."""
    return OPTION_LABELS.get(key, key)


def job_kind(kind: str) -> str:
    return JOB_KINDS.get(kind, kind)


def job_state(state: str) -> str:
    return JOB_STATES.get(state, state)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def applied_text(changes: Mapping[str, Any]) -> str:
    """"Applied: Clip skip 2, SD VAE vae-ft-mse" for the options just written."""
    if not changes:
        return "Nothing changed."
    items = sorted((option_label(k), _value(v)) for k, v in changes.items())
    return "Applied: " + ", ".join(f"{label} {value}" for label, value in items)
