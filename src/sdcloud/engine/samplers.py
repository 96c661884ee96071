"""A1111 1.10 sampler names and schedule types, mapped onto diffusers schedulers
(reference/a1111_api.md §4). This module imports diffusers only inside ``build_scheduler``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from sdcloud.errors import BadRequest


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    aliases: tuple[str, ...]
    scheduler_cls: str | None  # None: diffusers cannot express it
    kwargs: tuple[tuple[str, Any], ...] = ()
    default_schedule: str | None = None  # what "Automatic" resolves to (A1111 options.scheduler)
    options: tuple[tuple[str, str], ...] = ()


# In A1111 1.10's /samplers order.
_SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "dpmsolver++"), ("solver_order", 2)), "karras", (("scheduler", "karras"),)),
    SamplerSpec("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", (), "karras",
                (("scheduler", "karras"), ("second_order", "True"), ("brownian_noise", "True"))),
    SamplerSpec("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2)), "exponential",
                (("scheduler", "exponential"), ("brownian_noise", "True"))),
    SamplerSpec("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "heun")),
                "exponential", (("scheduler", "exponential"), ("brownian_noise", "True"))),
    SamplerSpec("DPM++ 2S a", ("k_dpmpp_2s_a",), "DPMPP2SAncestralScheduler", (), "karras",
                (("scheduler", "karras"), ("uses_ensd", "True"), ("second_order", "True"))),
    SamplerSpec("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3)), "exponential",
                (("scheduler", "exponential"), ("discard_next_to_last_sigma", "True"), ("brownian_noise", "True"))),
    SamplerSpec("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", (), None,
                (("uses_ensd", "True"),)),
    SamplerSpec("Euler", ("k_euler",), "EulerDiscreteScheduler"),
    SamplerSpec("LMS", ("k_lms",), "LMSDiscreteScheduler"),
    SamplerSpec("Heun", ("k_heun",), "HeunDiscreteScheduler", (), None, (("second_order", "True"),)),
    SamplerSpec("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", (), "karras",
                (("scheduler", "karras"), ("discard_next_to_last_sigma", "True"), ("second_order", "True"))),
    SamplerSpec("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", (), "karras",
                (("scheduler", "karras"), ("discard_next_to_last_sigma", "True"), ("uses_ensd", "True"),
                 ("second_order", "True"))),
    SamplerSpec("DPM fast", ("k_dpm_fast",), None, (), None, (("uses_ensd", "True"),)),
    SamplerSpec("DPM adaptive", ("k_dpm_ad",), None, (), None, (("uses_ensd", "True"),)),
    SamplerSpec("Restart", ("restart",), "RestartScheduler", (), "karras",
                (("scheduler", "karras"), ("second_order", "True"))),
    SamplerSpec("DDIM", ("ddim",), "DDIMScheduler", (("clip_sample", False), ("set_alpha_to_one", False))),
    SamplerSpec("DDIM CFG++", ("ddim_cfgpp",), None),
    SamplerSpec("PLMS", ("plms",), "PNDMScheduler", (("skip_prk_steps", True),)),
    SamplerSpec("UniPC", ("unipc",), "UniPCMultistepScheduler"),
    SamplerSpec("LCM", ("k_lcm",), "LCMScheduler"),
)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    label: str
    aliases: tuple[str, ...] | None
    default_rho: float
    need_inner_model: bool
    kwargs: tuple[tuple[str, Any], ...] | None  # None: cannot be expressed in diffusers
    custom_sigmas: bool = False  # computed here as a sigma list (``schedule_sigmas``), as A1111 does


_SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("automatic", "Automatic", None, -1, False, ()),
    ScheduleSpec("uniform", "Uniform", None, -1, True, (("timestep_spacing", "linspace"),)),
    # Karras/Exponential: a sigma list computed here where the scheduler takes one (``_sigma_list_for``);
    # diffusers' flag elsewhere, with linspace spacing so its range is the model's whole sigma_min..sigma_max
    ScheduleSpec("karras", "Karras", None, 7.0, False, (("use_karras_sigmas", True), ("timestep_spacing", "linspace"))),
    ScheduleSpec("exponential", "Exponential", None, -1, False,
                 (("use_exponential_sigmas", True), ("timestep_spacing", "linspace"))),
    ScheduleSpec("polyexponential", "Polyexponential", None, 1.0, False, (), True),
    ScheduleSpec("sgm_uniform", "SGM Uniform", ("SGMUniform",), -1, True, (("timestep_spacing", "trailing"),)),
    ScheduleSpec("kl_optimal", "KL Optimal", None, -1, False, (), True),
    ScheduleSpec("align_your_steps", "Align Your Steps", None, -1, False, (), True),
    ScheduleSpec("simple", "Simple", None, -1, True, (("timestep_spacing", "trailing"),)),
    ScheduleSpec("normal", "Normal", None, -1, True, (("timestep_spacing", "linspace"),)),
    ScheduleSpec("ddim", "DDIM", None, -1, True, (("timestep_spacing", "leading"),)),
    ScheduleSpec("beta", "Beta", None, -1, True, (("use_beta_sigmas", True), ("timestep_spacing", "linspace"))),
)

_BY_NAME = {s.name: s for s in _SPECS}
_SCHEDULE_BY_KEY: dict[str, ScheduleSpec] = {}
for _s in _SCHEDULES:
    for _k in (_s.name, _s.label, *(_s.aliases or ())):
        _SCHEDULE_BY_KEY[_k.lower()] = _s


def available_samplers() -> list[str]:
    return [s.name for s in _SPECS if s.scheduler_cls]


def sampler_list() -> list[dict[str, Any]]:
    """``/sdapi/v1/samplers``: the samplers this server can run, A1111 item shape."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)}
            for s in _SPECS if s.scheduler_cls]


def scheduler_list() -> list[dict[str, Any]]:
    """``/sdapi/v1/schedulers``: the schedule types this server can run, A1111 item shape."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) if s.aliases else None,
             "default_rho": s.default_rho, "need_inner_model": s.need_inner_model}
            for s in _SCHEDULES if s.kwargs is not None]


def _find_schedule(text: str) -> ScheduleSpec | None:
    return _SCHEDULE_BY_KEY.get(text.strip().lower())


def resolve_sampler(name: str | None, schedule: str | None = None) -> tuple[str, str]:
    """Return ``(sampler name, schedule label)``; accepts legacy names like "DPM++ 2M Karras".

    Unlike A1111 (which silently falls back to DPM++ 2M), an unknown or unsupported name is a
    ``BadRequest`` that lists what is available.
    """
    raw = (name or "").strip() or "Euler"
    sampler = raw
    if raw not in _BY_NAME:
        lowered = {a.lower(): s.name for s in _SPECS for a in (s.name, *s.aliases)}
        sampler = lowered.get(raw.lower(), "")
        if not sampler:
            for key in sorted(_SCHEDULE_BY_KEY, key=len, reverse=True):
                if raw.lower().endswith(" " + key):
                    base = raw[: -len(key) - 1].strip()
                    if base in _BY_NAME:
                        sampler, schedule = base, _SCHEDULE_BY_KEY[key].label
                        break
    spec = _BY_NAME.get(sampler)
    if spec is None:
        raise BadRequest(f"unknown sampler '{raw}'; available: {', '.join(available_samplers())}")
    if spec.scheduler_cls is None:
        raise BadRequest(f"sampler '{spec.name}' cannot be expressed with diffusers; available: "
                         f"{', '.join(available_samplers())}")
    sched = _find_schedule(schedule) if schedule else _SCHEDULE_BY_KEY["automatic"]
    if sched is None:
        labels = ", ".join(s.label for s in _SCHEDULES if s.kwargs is not None)
        raise BadRequest(f"unknown schedule type '{schedule}'; available: {labels}")
    if sched.kwargs is None:
        labels = ", ".join(s.label for s in _SCHEDULES if s.kwargs is not None)
        raise BadRequest(f"schedule type '{sched.label}' cannot be expressed with diffusers; available: {labels}")
    if sched.custom_sigmas and spec.scheduler_cls not in _CUSTOM_SIGMA_CLASSES:
        raise BadRequest(f"schedule type '{sched.label}' is not available with sampler '{spec.name}'; it works with: "
                         f"{', '.join(custom_sigma_samplers())}")
    if spec.scheduler_cls in _OWN_CLASSES and sched.label not in _OWN_SCHEDULES:
        raise BadRequest(f"schedule type '{sched.label}' is not available with sampler '{spec.name}'; available: "
                         f"{', '.join(_OWN_SCHEDULES)}")
    return spec.name, sched.label


# Schedulers whose step() only reads ``sigmas[i]``/``sigmas[i+1]`` (one model call per step), so a sigma
# list computed here can replace theirs. Heun, DPM2 (a), DPM++ SDE interleave midpoints; DDIM, PLMS,
# LCM and UniPC run on timesteps (in A1111 too these ignore the schedule type). Our own k-diffusion
# samplers (DPM++ 2S a, Restart) run on a sigma list only, so only on the schedules computed here.
_OWN_CLASSES = ("DPMPP2SAncestralScheduler", "RestartScheduler")
_CUSTOM_SIGMA_CLASSES = frozenset({"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                                   "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", *_OWN_CLASSES})
_OWN_SCHEDULES = ("Automatic", "Karras", "Exponential", "Polyexponential", "KL Optimal", "Align Your Steps")
_LIST_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas")

# Align Your Steps, NVIDIA's published 10-step sigmas (A1111 1.10 sd_schedulers.py).
AYS_SIGMAS = {
    "sd": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}


def _sigma_list_for(sched: ScheduleSpec, scheduler_cls: str | None) -> bool:
    """Whether the schedule is computed here as a sigma list: the custom-sigma ones, and Karras and
    Exponential for every scheduler that takes a list. diffusers' own ``use_karras_sigmas`` is not
    A1111's schedule: with SD's "leading" spacing it spans only the chosen timesteps (sigma_max about
    11 instead of 14.61 at 20 steps for Euler/LMS), DPM++ 2M rounds its timesteps to integers, and
    DPM++ 3M SDE would miss A1111's discarded next-to-last sigma."""
    if sched.custom_sigmas:
        return True
    return scheduler_cls in _CUSTOM_SIGMA_CLASSES and any(k in _LIST_FLAGS for k, _ in sched.kwargs or ())


def custom_sigma_samplers() -> list[str]:
    """Samplers that can run the Polyexponential, KL Optimal and Align Your Steps schedules."""
    return [s.name for s in _SPECS if s.scheduler_cls in _CUSTOM_SIGMA_CLASSES]


def schedule_sigmas(label: str, n: int, sigma_min: float, sigma_max: float, is_xl: bool = False) -> Any:
    """The ``n + 1`` sigmas (float32 tensor) of a schedule computed as A1111 1.10 does: k-diffusion
    ``get_sigmas_karras`` (rho 7), ``get_sigmas_exponential``, ``get_sigmas_polyexponential`` (rho 1),
    ``kl_optimal`` (ends at sigma_min, no zero appended) and ``get_align_your_steps_sigmas`` (the
    10-step table, log-linearly interpolated)."""
    import math

    import numpy as np
    import torch

    key = label.lower()
    if key == "karras":  # k-diffusion get_sigmas_karras, rho 7
        ramp = torch.linspace(0, 1, n)
        min_inv, max_inv = sigma_min ** (1 / 7.0), sigma_max ** (1 / 7.0)
        sigmas = (max_inv + ramp * (min_inv - max_inv)) ** 7.0
        return torch.cat([sigmas, sigmas.new_zeros([1])])
    if key == "exponential":  # k-diffusion get_sigmas_exponential
        sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()
        return torch.cat([sigmas, sigmas.new_zeros([1])])
    if key == "polyexponential":
        ramp = torch.linspace(1, 0, n) ** 1.0
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


def set_timesteps(scheduler: Any, sampler: str, schedule_label: str, steps: int, device: Any,
                  is_xl: bool = False) -> int:
    """``scheduler.set_timesteps`` for a resolved sampler and schedule; returns the number of steps laid
    out (``steps``, or the scheduler's training steps where diffusers allows no more). For a schedule
    computed here (``schedule_sigmas``: A1111's sigma_min/sigma_max, the model's whole range) the
    scheduler's sigmas and the matching timesteps (k-diffusion's ``sigma_to_t``, not rounded) are
    replaced; our own samplers always take such a list."""
    sched = _SCHEDULE_BY_KEY[effective_schedule(sampler, schedule_label).lower()]
    own = isinstance(scheduler, _KSampler)
    spec = _BY_NAME[sampler]
    if not own and not _sigma_list_for(sched, spec.scheduler_cls):
        steps = min(steps, int(scheduler.config.num_train_timesteps))
        scheduler.set_timesteps(steps, device=device)
        return steps
    import numpy as np
    import torch

    discard = dict(spec.options).get("discard_next_to_last_sigma") == "True"
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float32)
    model_sigmas = ((1 - alphas) / alphas) ** 0.5  # k-diffusion's model_wrap.sigmas (float32)
    sigmas = schedule_sigmas(sched.label, steps + (1 if discard else 0), model_sigmas[0].item(),
                             model_sigmas[-1].item(), is_xl)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    log_sigmas = model_sigmas.log().double().numpy()
    if own:
        scheduler.set_sigmas(sigmas, log_sigmas, device)
        return steps
    # resets the scheduler's per-run state (at most its training steps: diffusers refuses more)
    scheduler.set_timesteps(min(steps, int(scheduler.config.num_train_timesteps)), device=device)
    t = np.interp(np.log(sigmas[:-1].double().numpy()), log_sigmas, np.arange(len(log_sigmas)))
    scheduler.timesteps = torch.from_numpy(t.astype(np.float32)).to(device)
    scheduler.sigmas = sigmas.to(scheduler.sigmas.device, torch.float32)
    scheduler.num_inference_steps = steps
    return steps


def effective_schedule(sampler: str, schedule_label: str) -> str:
    """The label A1111 writes in the infotext: "Automatic" resolves to the sampler's default."""
    spec = _BY_NAME[sampler]
    if schedule_label == "Automatic" and spec.default_schedule:
        return _SCHEDULE_BY_KEY[spec.default_schedule].label
    return schedule_label


def build_scheduler(sampler: str, schedule_label: str, base_config: dict[str, Any]) -> Any:
    """Instantiate the diffusers scheduler for an already-resolved sampler and schedule."""
    import diffusers

    spec = _BY_NAME[sampler]
    if spec.scheduler_cls in _OWN_CLASSES:
        own: Any = {"DPMPP2SAncestralScheduler": DPMPP2SAncestralScheduler, "RestartScheduler": RestartScheduler}
        return own[spec.scheduler_cls].from_config(base_config)
    cls = getattr(diffusers, spec.scheduler_cls or "")
    label = effective_schedule(sampler, schedule_label)
    sched = _SCHEDULE_BY_KEY[label.lower()]
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = dict(spec.kwargs)
    for key, value in () if _sigma_list_for(sched, spec.scheduler_cls) else sched.kwargs or ():
        if key not in params:  # (a sigma-list schedule takes none: set_timesteps replaces the sigmas)
            if key == "timestep_spacing":
                continue  # the scheduler has a fixed spacing; nothing to change
            raise BadRequest(f"schedule type '{label}' is not available with sampler '{sampler}'")
        kwargs[key] = value
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if flag in params and flag not in kwargs:
            kwargs[flag] = False
    if "final_sigmas_type" in params and kwargs.get("algorithm_type", "").startswith("sde"):
        kwargs.setdefault("final_sigmas_type", "zero")
    return cls.from_config(config, **kwargs)


@dataclass
class _StepOutput:
    prev_sample: Any


class _KSampler:
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

    def _layout(self) -> list[tuple[Any, Any]]:
        raise NotImplementedError

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

    def _step(self, denoised: Any, sample: Any, data: Any, generator: Any) -> Any:
        raise NotImplementedError


class DPMPP2SAncestralScheduler(_KSampler):
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


class RestartScheduler(_KSampler):
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
