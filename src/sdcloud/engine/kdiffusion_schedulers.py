"""k-diffusion samplers that diffusers lacks (DPM++ 2S a, Restart), as diffusers-style schedulers
for our sampling loop: ``set_sigmas`` takes a sigma list from ``sigmas.schedule_sigmas``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from sdcloud.engine.sigmas import schedule_sigmas
from sdcloud.errors import BadRequest


@dataclass
class _StepOutput:
    prev_sample: Any


class KDiffusionScheduler(ABC):
    """A k-diffusion sampler as a diffusers-style scheduler for our loop. ``set_sigmas`` lays out the
    model calls as ``(sigma of the call, data)``; their timesteps (k-diffusion ``sigma_to_t``) form
    ``timesteps``, and ``step`` returns the model's next input (for a second-order method, the
    intermediate sample between a step's two calls, as diffusers' Heun/DPM2 do)."""

    order = 2
    name = ""

    def __init__(self, alphas_cumprod: Any, prediction_type: str = "epsilon") -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise BadRequest(f"sampler '{self.name}' does not support prediction type '{prediction_type}'")
        self.alphas_cumprod = alphas_cumprod
        self.prediction_type = prediction_type
        self.sigmas: Any = None
        self.timesteps: Any = None
        self._calls: list[tuple[Any, Any]] = []
        self._index: int | None = None
        self._begin = 0
        self._x: Any = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        import diffusers

        base = diffusers.EulerDiscreteScheduler.from_config(  # the betas → alphas_cumprod of any config
            {k: v for k, v in config.items() if not k.startswith("_")})
        return cls(base.alphas_cumprod, base.config.prediction_type)

    def set_sigmas(self, sigmas: Any, log_sigmas: Any, device: Any) -> None:
        """Use ``sigmas`` (n + 1 values); ``log_sigmas`` (the model's, by training step) give the timesteps."""
        import torch

        self._all_sigmas, self._log_sigmas, self._device = sigmas.to("cpu", torch.float32), log_sigmas, device
        self.start_at(0)

    def start_at(self, step: int) -> None:
        """Run on ``sigmas[step:]`` (img2img: A1111 hands the sampler the shortened schedule)."""
        import numpy as np
        import torch

        self.sigmas = self._all_sigmas[step:]
        self._calls = self._layout() if len(self.sigmas) > 1 else []
        call_sigmas = np.array([float(c[0]) for c in self._calls], dtype=np.float64)
        t = np.interp(np.log(call_sigmas), self._log_sigmas, np.arange(len(self._log_sigmas)))
        self.timesteps = torch.from_numpy(t.astype(np.float32)).to(self._device)
        self._index, self._begin, self._x = None, 0, None

    @abstractmethod
    def _layout(self) -> list[tuple[Any, Any]]:
        """The model calls of the whole schedule, as ``(sigma of the call, data for _step)``."""

    def set_timesteps(self, steps: int, device: Any = None) -> None:
        raise RuntimeError("use samplers.set_timesteps, which computes the sigma list")

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin = begin_index

    @property
    def init_noise_sigma(self) -> Any:
        return self.sigmas[0]

    def _call(self) -> tuple[Any, Any]:
        if self._index is None:
            self._index = self._begin
        return self._calls[self._index]

    def scale_model_input(self, sample: Any, timestep: Any = None) -> Any:
        sigma = self._call()[0]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    def add_noise(self, original: Any, noise: Any, timesteps: Any) -> Any:
        hits = (self.timesteps == timesteps.reshape(-1)[0].to(self.timesteps.device)).nonzero()
        index = int(hits[0]) if len(hits) else self._begin
        return original + noise * self._calls[index][0].to(original.device)

    def _denoised(self, model_output: Any, sample: Any, sigma: Any) -> Any:
        if self.prediction_type == "v_prediction":  # k-diffusion CompVisVDenoiser
            return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
        return sample - sigma * model_output  # CompVisDenoiser

    @staticmethod
    def _noise(x: Any, generator: Any) -> Any:
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def step(self, model_output: Any, timestep: Any, sample: Any, generator: Any = None,
             return_dict: bool = True) -> _StepOutput:
        sigma, data = self._call()
        self._index = (self._index or 0) + 1
        return _StepOutput(self._step(self._denoised(model_output, sample, sigma), sample, data, generator))

    @abstractmethod
    def _step(self, denoised: Any, sample: Any, data: Any, generator: Any) -> Any:
        """The model's next input, from this call's denoised prediction."""


class DPMPP2SAncestralScheduler(KDiffusionScheduler):
    """A1111's "DPM++ 2S a": k-diffusion ``sample_dpmpp_2s_ancestral`` (eta 1, s_noise 1). Each step
    calls the model at ``sigma`` and at the log-midpoint towards ``sigma_down`` (once only on a step
    to 0); the second call's result gives the next sample, plus ``sigma_up`` of fresh noise."""

    name = "DPM++ 2S a"

    def _ancestral(self, i: int) -> tuple[Any, Any]:
        """k-diffusion ``get_ancestral_step(sigmas[i], sigmas[i + 1], eta=1)``: (sigma_down, sigma_up)."""
        s_from, s_to = self.sigmas[i], self.sigmas[i + 1]
        up = min(s_to, (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)
        return (s_to ** 2 - up ** 2) ** 0.5, up

    def _layout(self) -> list[tuple[Any, Any]]:
        calls = []
        for i in range(len(self.sigmas) - 1):
            calls.append((self.sigmas[i], (i, False)))
            down, _ = self._ancestral(i)
            if down > 0:
                t, t_next = self.sigmas[i].log().neg(), down.log().neg()
                calls.append(((t + 0.5 * (t_next - t)).neg().exp(), (i, True)))
        return calls

    def _step(self, denoised: Any, sample: Any, data: Any, generator: Any) -> Any:
        i, second = data
        sigma_i, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        down, up = self._ancestral(i)
        if down == 0:  # Euler step onto sigma_down = 0
            x = sample + (sample - denoised) / sigma_i * (down - sigma_i)
        else:
            t, t_next = sigma_i.log().neg(), down.log().neg()
            h = t_next - t
            if not second:  # DPM-Solver++(2S): the midpoint sample, the model's next input
                self._x = sample
                s = t + 0.5 * h
                return (s.neg().exp() / t.neg().exp()) * sample - (-h * 0.5).expm1() * denoised
            x = (t_next.neg().exp() / t.neg().exp()) * self._x - (-h).expm1() * denoised
            self._x = None
        if sigma_next > 0:
            x = x + self._noise(x, generator) * up
        return x


def _karras(n: int, sigma_min: float, sigma_max: float) -> Any:
    return schedule_sigmas("Karras", n, sigma_min, sigma_max)


class RestartScheduler(KDiffusionScheduler):
    """A1111's "Restart" (``sd_samplers_extra.restart_sampler``, Restart Sampling, Xu et al. 2023):
    Heun steps; from 20 steps on, the main schedule becomes Karras with fewer steps and, once sigma
    reaches about 0.1, the run jumps back to sigma about 2 with fresh noise (twice from 36 steps) and
    descends again. The Heun steps add up to the requested step count."""

    name = "Restart"

    def _layout(self) -> list[tuple[Any, Any]]:
        import torch

        sigmas = self.sigmas
        steps = len(sigmas) - 1
        restart: dict[int, tuple[int, int, float]] = {}
        if steps >= 20:
            restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = _karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
            restart = {int(torch.argmin(abs(sigmas - 0.1), dim=0)): (restart_steps + 1, restart_times, 2.0)}
        self.sigmas = sigmas
        pairs = []
        for i in range(len(sigmas) - 1):
            pairs.append((sigmas[i], sigmas[i + 1]))
            if i + 1 in restart:
                r_steps, r_times, r_max = restart[i + 1]
                min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - r_max), dim=0))
                if max_idx < min_idx:
                    s_restart = _karras(r_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                    pairs += list(zip(s_restart[:-1], s_restart[1:], strict=True)) * r_times
        calls: list[tuple[Any, Any]] = []
        for k, (old, new) in enumerate(pairs):
            next_old = pairs[k + 1][0] if k + 1 < len(pairs) else None
            jump = (next_old ** 2 - new ** 2) ** 0.5 if next_old is not None and new < next_old else None
            calls.append((old, (old, new, False, jump)))
            if new != 0:
                calls.append((new, (old, new, True, jump)))
        return calls

    def _step(self, denoised: Any, sample: Any, data: Any, generator: Any) -> Any:
        old, new, second, jump = data
        if not second:
            d = (sample - denoised) / old
            if new == 0:  # Euler onto 0
                return sample + d * (new - old)
            self._x, self._d = sample, d
            return sample + d * (new - old)
        d_2 = (sample - denoised) / new
        x = self._x + (self._d + d_2) / 2 * (new - old)
        self._x = self._d = None
        if jump is not None:  # restart: back up to a higher sigma with fresh noise
            x = x + self._noise(x, generator) * jump
        return x
