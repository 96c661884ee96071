"""Sigma schedules computed as A1111 1.10 (k-diffusion) does, for the samplers that take a list.

Pure formulas over ``(n, sigma_min, sigma_max)``; ``samplers.set_timesteps`` hands the result to
the scheduler. No diffusers import.
"""

from __future__ import annotations

from typing import Any

# Align Your Steps, NVIDIA's published 10-step sigmas (A1111 1.10 sd_schedulers.py).
AYS_SIGMAS = {
    "sd": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}


def schedule_sigmas(label: str, n: int, sigma_min: float, sigma_max: float, is_xl: bool = False,
                    rho: float | None = None) -> Any:
    """The ``n + 1`` sigmas (float32 tensor) of a schedule computed as A1111 1.10 does: k-diffusion
    ``get_sigmas_karras`` (rho 7), ``get_sigmas_exponential``, ``get_sigmas_polyexponential`` (rho 1),
    ``kl_optimal`` (ends at sigma_min, no zero appended) and ``get_align_your_steps_sigmas`` (the
    10-step table, log-linearly interpolated). ``rho``: A1111's "Schedule rho" option for Karras
    and Polyexponential (None: 7 and 1)."""
    import math

    import numpy as np
    import torch

    key = label.lower()
    if key == "karras":  # k-diffusion get_sigmas_karras, rho 7
        r = rho or 7.0
        ramp = torch.linspace(0, 1, n)
        min_inv, max_inv = sigma_min ** (1 / r), sigma_max ** (1 / r)
        sigmas = (max_inv + ramp * (min_inv - max_inv)) ** r
        return torch.cat([sigmas, sigmas.new_zeros([1])])
    if key == "exponential":  # k-diffusion get_sigmas_exponential
        sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()
        return torch.cat([sigmas, sigmas.new_zeros([1])])
    if key == "polyexponential":
        ramp = torch.linspace(1, 0, n) ** (rho or 1.0)
        sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
        return torch.cat([sigmas, sigmas.new_zeros([1])])
    if key == "kl optimal":
        alpha_min = torch.arctan(torch.tensor(sigma_min))
        alpha_max = torch.arctan(torch.tensor(sigma_max))
        idx = torch.arange(n + 1)
        return torch.tan(idx / n * alpha_min + (1.0 - idx / n) * alpha_max)
    if key == "align your steps":
        table = list(AYS_SIGMAS["sdxl" if is_xl else "sd"])
        if n != len(table):
            xs = np.linspace(0, 1, len(table))
            ys = np.log(table[::-1])
            interped = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
            table = [*interped, 0.0]
        else:
            table.append(0.0)
        return torch.tensor(table, dtype=torch.float32)
    raise ValueError(f"'{label}' is not a custom-sigma schedule")
