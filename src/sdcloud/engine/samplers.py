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
    SamplerSpec("DPM++ 2S a", ("k_dpmpp_2s_a",), None, (), "karras",
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
    SamplerSpec("Restart", ("restart",), None, (), "karras", (("scheduler", "karras"), ("second_order", "True"))),
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


_SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("automatic", "Automatic", None, -1, False, ()),
    ScheduleSpec("uniform", "Uniform", None, -1, True, (("timestep_spacing", "linspace"),)),
    ScheduleSpec("karras", "Karras", None, 7.0, False, (("use_karras_sigmas", True),)),
    ScheduleSpec("exponential", "Exponential", None, -1, False,
                 (("use_exponential_sigmas", True), ("timestep_spacing", "linspace"))),
    ScheduleSpec("polyexponential", "Polyexponential", None, 1.0, False, None),
    ScheduleSpec("sgm_uniform", "SGM Uniform", ("SGMUniform",), -1, True, (("timestep_spacing", "trailing"),)),
    ScheduleSpec("kl_optimal", "KL Optimal", None, -1, False, None),
    ScheduleSpec("align_your_steps", "Align Your Steps", None, -1, False, None),
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
    return spec.name, sched.label


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
    cls = getattr(diffusers, spec.scheduler_cls or "")
    label = effective_schedule(sampler, schedule_label)
    sched = _SCHEDULE_BY_KEY[label.lower()]
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = dict(spec.kwargs)
    for key, value in sched.kwargs or ():
        if key not in params:
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
