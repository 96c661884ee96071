"""A1111 1.10 sampler names and schedule types, mapped onto diffusers schedulers
(reference/a1111_api.md §4). This module imports diffusers only inside ``build_scheduler``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from sdcloud.engine.kdiffusion_schedulers import DPMPP2SAncestralScheduler, KDiffusionScheduler, RestartScheduler
from sdcloud.engine.sigmas import schedule_sigmas
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


def set_timesteps(scheduler: Any, sampler: str, schedule_label: str, steps: int, device: Any,
                  is_xl: bool = False, overrides: dict[str, float] | None = None,
                  used: dict[str, object] | None = None) -> int:
    """``scheduler.set_timesteps`` for a resolved sampler and schedule; returns the number of steps laid
    out (``steps``, or the scheduler's training steps where diffusers allows no more). For a schedule
    computed here (``schedule_sigmas``: A1111's sigma_min/sigma_max, the model's whole range) the
    scheduler's sigmas and the matching timesteps (k-diffusion's ``sigma_to_t``, not rounded) are
    replaced; our own samplers always take such a list. ``overrides``: A1111's options
    ``sigma_min``, ``sigma_max`` and ``rho`` (0 = the schedule's own) and ``discard``
    (``always_discard_next_to_last_sigma``) for a schedule computed here; what took effect goes
    into ``used`` under its infotext label."""
    sched = _SCHEDULE_BY_KEY[effective_schedule(sampler, schedule_label).lower()]
    own = isinstance(scheduler, KDiffusionScheduler)
    spec = _BY_NAME[sampler]
    if not own and not _sigma_list_for(sched, spec.scheduler_cls):
        steps = min(steps, int(scheduler.config.num_train_timesteps))
        scheduler.set_timesteps(steps, device=device)
        return steps
    import numpy as np
    import torch

    discard = dict(spec.options).get("discard_next_to_last_sigma") == "True"
    if (overrides or {}).get("discard") and not discard:
        discard = True
        if used is not None:
            used["Discard penultimate sigma"] = "True"
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float32)
    model_sigmas = ((1 - alphas) / alphas) ** 0.5  # k-diffusion's model_wrap.sigmas (float32)
    lo, hi, rho = model_sigmas[0].item(), model_sigmas[-1].item(), None
    ov, used = overrides or {}, used if used is not None else {}
    if ov.get("sigma_min") and sched.label != "Align Your Steps":
        lo = used["Schedule min sigma"] = float(ov["sigma_min"])
    if ov.get("sigma_max") and sched.label != "Align Your Steps":
        hi = used["Schedule max sigma"] = float(ov["sigma_max"])
    if ov.get("rho") and sched.default_rho != -1 and ov["rho"] != sched.default_rho:
        rho = used["Schedule rho"] = float(ov["rho"])
    sigmas = schedule_sigmas(sched.label, steps + (1 if discard else 0), lo, hi, is_xl, rho)
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
