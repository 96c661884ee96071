"""X/Y/Z plot: one generation per combination of up to three axes, laid out as a labelled
grid, as A1111 1.10's ``scripts/xyz_grid.py`` does.

``script_args`` are A1111's 18 positional values: ``x_type, x_values, x_values_dropdown,
y_type, y_values, y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend,
include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x, vary_seeds_y,
vary_seeds_z, margin_size, csv_mode``. An axis type is the index into A1111's axis list for
that tab (so existing API clients keep working) or, as a convenience, the axis label.
Values are text (``10, 20, 30``; ranges ``1-5``, ``1-10 (+3)``, ``1-10 [4]``) or, for axes
with choices, the dropdown list.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdcloud.client_numbers import finite_float
from sdcloud.errors import BadRequest, NotFound
from sdcloud.scripts.base import (
    Generate,
    Script,
    ScriptArg,
    ScriptEnv,
    ScriptOutput,
    as_bool,
    as_number,
    random_seed,
)

TITLE = "X/Y/Z plot"

Apply = Callable[[dict[str, Any], Any, list[Any], ScriptEnv], None]


@dataclass(frozen=True)
class Axis:
    label: str
    kind: str  # "int", "float", "str", "perm"
    apply: Apply | None  # None: A1111 has it, this server cannot honour it (refused)
    tab: str = "both"  # "txt2img", "img2img" or "both": which tab's list holds it
    cost: float = 0.0  # slow-to-change axes run in the outer loop
    label_style: str = "labelled"  # "labelled" ("Steps: 20"), "plain", "basename", "join", "none"
    choices: Callable[[ScriptEnv], list[str]] | None = None


def _field(name: str, lo: float | None = None, hi: float | None = None) -> Apply:
    def apply(cell: dict[str, Any], x: Any, xs: list[Any], env: ScriptEnv) -> None:
        if lo is not None and hi is not None and not lo <= x <= hi:
            raise BadRequest(f"{name} must be between {lo:g} and {hi:g}; the X/Y/Z plot has {x}")
        cell["fields"][name] = x
    return apply


def _flag(name: str) -> Apply:
    def apply(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
        if x.strip().lower() not in ("true", "false"):
            raise BadRequest(f"{name} must be True or False; the X/Y/Z plot has '{x}'")
        cell["fields"][name] = x.strip().lower() == "true"
    return apply


def _seed(name: str) -> Apply:
    def apply(cell: dict[str, Any], x: Any, xs: list[Any], env: ScriptEnv) -> None:
        if not -1 <= x < 2**32:
            raise BadRequest(f"{name} must be -1 (random) or 0..{2**32 - 1}; the X/Y/Z plot has {x}")
        cell["fields"][name] = random_seed() if x == -1 else x
    return apply


def _prompt_sr(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    f = cell["fields"]
    search = xs[0]
    if search not in f["prompt"] and search not in f["negative_prompt"]:
        raise BadRequest(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    for key in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        if f.get(key):
            f[key] = f[key].replace(search, x)


def _prompt_order(cell: dict[str, Any], x: tuple[str, ...], xs: list[Any], env: ScriptEnv) -> None:
    prompt = cell["fields"]["prompt"]
    for token in x:
        if token not in prompt:
            raise BadRequest(f"Prompt order: '{token}' is not in the prompt")
    found = sorted(x, key=prompt.find)
    parts = []
    for token in found:
        n = prompt.find(token)
        parts.append(prompt[:n])
        prompt = prompt[n + len(token):]
    cell["fields"]["prompt"] = "".join(part + x[i] for i, part in enumerate(parts)) + prompt


def _sampler(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    f = cell["fields"]
    f["sampler_name"], f["scheduler"] = env.resolve_sampler(x, f.get("scheduler"))


def _hr_sampler(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    f = cell["fields"]
    f["hr_sampler_name"], f["hr_scheduler"] = env.resolve_sampler(x, f.get("hr_scheduler") or f.get("scheduler"))


def _schedule(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    f = cell["fields"]
    f["sampler_name"], f["scheduler"] = env.resolve_sampler(f["sampler_name"], x)


def _checkpoint(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    try:
        cell["model"] = env.resolve_model(x)
    except NotFound:
        raise BadRequest(f"Unknown checkpoint: {x}") from None


def _refiner(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    if x.strip() in ("", "None", "none"):
        cell["fields"]["refiner_checkpoint"] = None
        return
    try:
        cell["fields"]["refiner_checkpoint"] = env.resolve_model(x)
    except NotFound:
        raise BadRequest(f"Unknown refiner checkpoint: {x}") from None


def _vae(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    try:
        cell["vae"] = env.resolve_vae(x)
    except NotFound:
        raise BadRequest(f"Unknown VAE: {x}") from None


def _clip_skip(cell: dict[str, Any], x: int, xs: list[Any], env: ScriptEnv) -> None:
    if not 1 <= x <= 12:
        raise BadRequest(f"Clip skip must be between 1 and 12; the X/Y/Z plot has {x}")
    cell["fields"]["clip_skip"] = x


def _hr_upscaler(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    match = next((u for u in env.hr_upscalers if u.lower() == x.lower()), None)
    if match is None:
        raise BadRequest(f"unknown Hires upscaler '{x}'; available: {', '.join(env.hr_upscalers)}")
    cell["fields"]["hr_upscaler"] = match


def _styles(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    names = [s.strip() for s in x.split(",") if s.strip()]
    unknown = [n for n in names if n not in env.styles]
    if unknown:
        raise BadRequest(f"unknown style '{unknown[0]}'; styles.csv has: {', '.join(env.styles) or 'none'}")
    f = cell["fields"]
    f["prompt"], f["negative_prompt"] = env.apply_styles(f["prompt"], f["negative_prompt"], names)


def _size(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    m = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", x)
    if not m:
        raise BadRequest(f"Size must be WIDTHxHEIGHT (e.g. 512x768); the X/Y/Z plot has '{x}'")
    cell["fields"]["width"], cell["fields"]["height"] = int(m.group(1)), int(m.group(2))


def _face_restore(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    """A1111: true/yes/on restores faces with the face_restoration_model option, anything else not."""
    if x.strip().lower() in ("true", "yes", "on"):
        if env.face_restorer is None:
            raise BadRequest("Face restore: this server has no face restorer")
        cell["fields"]["restore_faces"] = env.face_restorer()
    else:
        cell["fields"]["restore_faces"] = ""


def _rng(cell: dict[str, Any], x: str, xs: list[Any], env: ScriptEnv) -> None:
    if x.upper() != "CPU":
        raise BadRequest("RNG source: this server draws noise on the CPU only (RNG: CPU)")


def _noop(cell: dict[str, Any], x: Any, xs: list[Any], env: ScriptEnv) -> None:
    return None


# A1111 1.10's axis list, in its order: API clients send indices into it.
AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", _noop, label_style="none"),
    Axis("Seed", "int", _seed("seed")),
    Axis("Var. seed", "int", _seed("subseed")),
    Axis("Var. strength", "float", _field("subseed_strength", 0, 1)),
    Axis("Steps", "int", _field("steps", 1, 150)),
    Axis("Hires steps", "int", _field("hr_second_pass_steps", 0, 150), tab="txt2img"),
    Axis("CFG Scale", "float", _field("cfg_scale", 0, 100)),
    Axis("Image CFG Scale", "float", None, tab="img2img"),
    Axis("Prompt S/R", "str", _prompt_sr, label_style="plain"),
    Axis("Prompt order", "perm", _prompt_order, label_style="join"),
    Axis("Sampler", "str", _sampler, tab="txt2img", label_style="plain", choices=lambda e: e.samplers),
    Axis("Hires sampler", "str", _hr_sampler, tab="txt2img", choices=lambda e: e.samplers),
    Axis("Sampler", "str", _sampler, tab="img2img", label_style="plain", choices=lambda e: e.samplers),
    Axis("Checkpoint name", "str", _checkpoint, cost=1.0, label_style="basename", choices=lambda e: e.checkpoints),
    Axis("Negative Guidance minimum sigma", "float", _field("s_min_uncond", 0, 100)),
    Axis("Sigma Churn", "float", _field("s_churn", 0, 100)),
    Axis("Sigma min", "float", _field("s_tmin", 0, 1000)),
    Axis("Sigma max", "float", _field("s_tmax", 0, 1000)),
    Axis("Sigma noise", "float", _field("s_noise", 0, 2)),
    Axis("Schedule type", "str", _schedule, choices=lambda e: e.schedules),
    Axis("Schedule min sigma", "float", _field("sigma_min", 0, 1000)),
    Axis("Schedule max sigma", "float", _field("sigma_max", 0, 1000)),
    Axis("Schedule rho", "float", _field("rho", 0, 100)),
    Axis("Skip Early CFG", "float", _field("skip_early_cond", 0, 1)),
    Axis("Beta schedule alpha", "float", None),
    Axis("Beta schedule beta", "float", None),
    Axis("Eta", "float", _field("eta", 0, 1)),
    Axis("Clip skip", "int", _clip_skip),
    Axis("Denoising", "float", _field("denoising_strength", 0, 1)),
    Axis("Initial noise multiplier", "float", _field("initial_noise_multiplier", 0, 1.5)),
    Axis("Extra noise", "float", None),
    Axis("Hires upscaler", "str", _hr_upscaler, tab="txt2img", choices=lambda e: e.hr_upscalers),
    Axis("Cond. Image Mask Weight", "float", None, tab="img2img"),
    Axis("VAE", "str", _vae, cost=0.7, choices=lambda e: ["Automatic", "None", *e.vaes]),
    Axis("Styles", "str", _styles, choices=lambda e: e.styles),
    Axis("UniPC Order", "int", None, cost=0.5),
    Axis("Face restore", "str", _face_restore, label_style="plain", choices=lambda e: ["False", "True"]),
    Axis("Token merging ratio", "float", None),
    Axis("Token merging ratio high-res", "float", None),
    Axis("Always discard next-to-last sigma", "str", _flag("always_discard_next_to_last_sigma"),
         choices=lambda e: ["False", "True"]),
    Axis("SGM noise multiplier", "str", None, choices=lambda e: ["False", "True"]),
    Axis("Refiner checkpoint", "str", _refiner, cost=1.0, label_style="basename",
         choices=lambda e: ["None", *e.checkpoints]),
    Axis("Refiner switch at", "float", _field("refiner_switch_at", 0, 1)),
    Axis("RNG source", "str", _rng, choices=lambda e: ["GPU", "CPU", "NV"]),
    Axis("FP8 mode", "str", None, cost=0.9, choices=lambda e: ["Disable", "Enable for SDXL", "Enable"]),
    Axis("Size", "str", _size),
)

_RANGE_INT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
_COUNT_INT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")
MAX_VALUES = 100  # per axis: a range typo like 1-100000 is refused, not queued
MAX_ORDER_WORDS = 5  # Prompt order: 5 words are 120 orders, 11 would be 39916800


def axes_for(is_img2img: bool) -> list[Axis]:
    tab = "img2img" if is_img2img else "txt2img"
    return [a for a in AXES if a.tab in ("both", tab)]


def csv_values(text: str) -> list[str]:
    return [v.strip() for row in csv.reader(io.StringIO(text)) for v in row]


def _num(text: str) -> float:
    """A number of a range; 400 when it is too large for a float (400 digits: infinity)."""
    return finite_float(text.replace(" ", ""), "X/Y/Z plot range value")


def _linspace(start: float, stop: float, num: int) -> list[float]:
    if num <= 1:
        return [start]
    return [start + (stop - start) * i / (num - 1) for i in range(num)]


def expand(kind: str, values: list[str]) -> list[Any]:
    """A1111's value syntax: ``1-5`` (step 1), ``1-10 (+3)`` (step), ``1-10 [4]`` (count)."""
    out: list[Any] = []
    for v in values:
        if kind == "int" and (m := _RANGE_INT.fullmatch(v)):
            start, end, step = int(_num(m.group(1))), int(_num(m.group(2))), int(_num(m.group(3) or "1"))
            if step == 0:
                raise BadRequest(f"range '{v}' has a step of 0")
            span = range(start, end + (1 if step > 0 else -1), step)
            if len(span) > MAX_VALUES:  # before the list is made: 1-10000000000 is 10^10 values
                raise BadRequest(f"range '{v}' makes {len(span)} values; at most {MAX_VALUES} per axis")
            out += list(span)
        elif kind == "int" and (m := _COUNT_INT.fullmatch(v)):
            num = int(_num(m.group(3) or "1"))
            out += [int(x) for x in _linspace(int(_num(m.group(1))), int(_num(m.group(2))), min(num, MAX_VALUES + 1))]
        elif kind == "float" and (m := _RANGE_FLOAT.fullmatch(v)):
            start, end, step = _num(m.group(1)), _num(m.group(2)), _num(m.group(3) or "1")
            if step == 0:
                raise BadRequest(f"range '{v}' has a step of 0")
            count = (end - start) / step + 1e-9  # inf for 1e308 - -1e308
            n = int(count) + 1 if math.isfinite(count) and count < MAX_VALUES else MAX_VALUES + 1
            if n > MAX_VALUES:
                raise BadRequest(f"range '{v}' makes {n} values; at most {MAX_VALUES} per axis")
            out += [round(start + i * step, 10) for i in range(max(n, 0))]
        elif kind == "float" and (m := _COUNT_FLOAT.fullmatch(v)):
            num = int(_num(m.group(3) or "1"))
            out += _linspace(_num(m.group(1)), _num(m.group(2)), min(num, MAX_VALUES + 1))
        else:
            out.append(v)
        if len(out) > MAX_VALUES:
            raise BadRequest(f"an X/Y/Z axis may have at most {MAX_VALUES} values")
    if kind == "perm":
        if len(out) > MAX_ORDER_WORDS:  # 11 words are 39916800 orders
            raise BadRequest(f"Prompt order of {len(out)} words makes {math.factorial(len(out))} orders; "
                             f"at most {MAX_ORDER_WORDS} words ({math.factorial(MAX_ORDER_WORDS)} orders)")
        return list(itertools.permutations(out))
    typed = []
    for v in out:
        try:
            typed.append(int(v) if kind == "int" else float(v) if kind == "float" else str(v))
        except ValueError:
            raise BadRequest(f"X/Y/Z plot value '{v}' is not a{'n integer' if kind == 'int' else ' number'}") from None
    return typed


def format_label(axis: Axis, value: Any) -> str:
    if isinstance(value, float):
        value = round(value, 8)
    if axis.label_style == "none":
        return ""
    if axis.label_style == "plain":
        return str(value)
    if axis.label_style == "basename":
        return str(value).replace("\\", "/").rsplit("/", 1)[-1]
    if axis.label_style == "join":
        return ", ".join(value)
    return f"{axis.label}: {value}"


class XYZPlot(Script):
    title = TITLE

    def args(self, is_img2img: bool, env: ScriptEnv | None = None) -> list[ScriptArg]:
        labels = [a.label for a in axes_for(is_img2img)]
        out = []
        for name, default in (("X", 1), ("Y", 0), ("Z", 0)):
            out += [ScriptArg(f"{name} type", labels[default], choices=labels),
                    ScriptArg(f"{name} values", ""), ScriptArg(f"{name} values", [])]
        out += [ScriptArg("Draw legend", True), ScriptArg("Include Sub Images", False),
                ScriptArg("Include Sub Grids", False), ScriptArg("Keep -1 for seeds", False),
                ScriptArg("Vary seeds for X", False), ScriptArg("Vary seeds for Y", False),
                ScriptArg("Vary seeds for Z", False),
                ScriptArg("Grid margins (px)", 0, minimum=0, maximum=500, step=2),
                ScriptArg("Use text inputs instead of dropdowns", False)]
        return out

    def _axis(self, value: Any, is_img2img: bool, name: str) -> Axis:
        axes = axes_for(is_img2img)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(axes):
            return axes[value]
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit() and int(text) < len(axes):
                return axes[int(text)]
            for a in axes:
                if a.label.lower() == text.lower():
                    return a
        raise BadRequest(f"{name} type {value!r} is not an X/Y/Z axis; use an index 0-{len(axes) - 1} or one of: "
                         f"{', '.join(a.label for a in axes)}")

    def _values(self, axis: Axis, text: Any, dropdown: Any, csv_mode: bool, env: ScriptEnv) -> list[Any]:
        if axis.label == "Nothing":
            return [0]
        if axis.apply is None:
            supported = [a.label for a in AXES if a.apply is not None]
            raise BadRequest(f"the X/Y/Z axis '{axis.label}' is not supported by this server; "
                             f"supported: {', '.join(dict.fromkeys(supported))}")
        if axis.choices is not None and not csv_mode and isinstance(dropdown, list) and dropdown:
            raw = [str(v) for v in dropdown]
        elif isinstance(text, (int, float)) and not isinstance(text, bool):
            raw = [str(text)]
        elif isinstance(text, str):
            raw = csv_values(text)
        elif isinstance(text, list):
            raw = [str(v) for v in text]
        else:
            raw = []
        raw = [v for v in raw if v != ""] if axis.kind != "str" or axis.label != "Prompt S/R" else raw
        if not raw:
            raise BadRequest(f"the X/Y/Z axis '{axis.label}' has no values")
        return expand(axis.kind, raw)

    def prepare(self, args: Sequence[Any], fields: dict[str, Any], env: ScriptEnv,
                is_img2img: bool) -> dict[str, Any]:
        a = self.positional(args, is_img2img)
        draw_legend, lone, sub_grids, keep_random = (as_bool(v, n) for v, n in zip(
            a[9:13], ("draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds"), strict=True))
        vary = [as_bool(v, f"vary_seeds_{n}") for v, n in zip(a[13:16], "xyz", strict=True)]
        margin = as_number(a[16], "margin_size", 0, 500, int)
        csv_mode = as_bool(a[17], "csv_mode")
        axes, values, texts = [], [], []
        for i, name in enumerate("XYZ"):
            axis = self._axis(a[3 * i], is_img2img, name)
            axes.append(axis)
            values.append(self._values(axis, a[3 * i + 1], a[3 * i + 2], csv_mode, env))
            texts.append(a[3 * i + 1] if isinstance(a[3 * i + 1], str) and (csv_mode or not a[3 * i + 2])
                         else ", ".join(str(v) for v in (a[3 * i + 2] or [])))
        xs, ys, zs = values
        per_cell = int(fields.get("batch_size", 1)) * int(fields.get("n_iter", 1))
        total = len(xs) * len(ys) * len(zs)
        if total * per_cell > env.max_images:
            raise BadRequest(f"the X/Y/Z plot would make {total * per_cell} images; at most {env.max_images}")
        seeds_fixed = not (keep_random and env.seed_was_random)
        fixed: dict[int, list[Any]] = {}
        for i, axis in enumerate(axes):
            if axis.label in ("Seed", "Var. seed") and not keep_random:
                values[i] = [random_seed() if v == -1 else v for v in values[i]]
                fixed[i] = values[i]
        cells: list[dict[str, Any]] = []
        for iz, z in enumerate(zs):
            for iy, y in enumerate(ys):
                for ix, x in enumerate(xs):
                    cell: dict[str, Any] = {"index": ix + iy * len(xs) + iz * len(xs) * len(ys),
                                            "fields": dict(fields), "model": None, "vae": "keep"}
                    if not seeds_fixed:
                        cell["fields"]["seed"] = random_seed()
                    for axis, v, vs in ((axes[0], x, xs), (axes[1], y, ys), (axes[2], z, zs)):
                        axis.apply(cell, v, vs, env)  # type: ignore[misc]
                    xdim = len(xs) if vary[0] else 1
                    ydim = len(ys) if vary[1] else 1
                    offset = (ix if vary[0] else 0) + (iy * xdim if vary[1] else 0) \
                        + (iz * xdim * ydim if vary[2] else 0)
                    cell["fields"]["seed"] = (cell["fields"]["seed"] + offset) % 2**32
                    if cell["fields"]["width"] % 8 or cell["fields"]["height"] % 8:
                        raise BadRequest("X/Y/Z Size values must be multiples of 8")
                    cells.append(cell)
        # the costliest axis changes least often (a checkpoint loads once per value)
        order = sorted(range(3), key=lambda i: -axes[i].cost)
        idx = {"x": lambda c: c["index"] % len(xs), "y": lambda c: c["index"] // len(xs) % len(ys),
               "z": lambda c: c["index"] // (len(xs) * len(ys))}
        keys = [idx["xyz"[i]] for i in order]
        cells.sort(key=lambda c: tuple(k(c) for k in keys))
        for c in cells:
            if isinstance(c["fields"].get("prompt"), str) and len(c["fields"]["prompt"]) > 20000:
                raise BadRequest("an X/Y/Z cell's prompt is too long")
        grid_params: list[list[Any]] = [["Script", TITLE]]
        z_params: list[list[Any]] = []
        for i, name in enumerate("XYZ"):
            if axes[i].label == "Nothing":
                continue
            target = z_params if name == "Z" else grid_params
            target += [[f"{name} Type", axes[i].label], [f"{name} Values", texts[i]]]
            if i in fixed:
                target.append([f"Fixed {name} Values", ", ".join(str(v) for v in fixed[i])])
        return {
            "cells": cells, "nx": len(xs), "ny": len(ys), "nz": len(zs),
            "x_labels": [format_label(axes[0], v) for v in xs],
            "y_labels": [format_label(axes[1], v) for v in ys],
            "z_labels": [format_label(axes[2], v) for v in zs],
            "draw_legend": draw_legend, "include_lone_images": lone, "include_sub_grids": sub_grids,
            "margin": margin, "grid_params": grid_params, "z_params": z_params,
        }

    def run(self, plan: dict[str, Any], fields: dict[str, Any], generate: Generate,
            init_images: list[Any]) -> ScriptOutput:
        from PIL import Image

        from sdcloud.scripts.grid import Label, draw_annotations, image_grid
        from sdcloud.scripts.infotext_extra import append_params

        nx, ny, nz = plan["nx"], plan["ny"], plan["nz"]
        n = nx * ny * nz
        cells: list[Any] = [None] * n
        texts: list[str] = [""] * n
        seeds: list[int] = [0] * n
        samples, sample_texts, sample_seeds = [], [], []
        interrupted = False
        for cell in plan["cells"]:
            result = generate(cell["fields"], cell["model"], cell["vae"])
            if result.images:
                i = cell["index"]
                cells[i], texts[i], seeds[i] = result.images[0], result.infotexts[0], result.seeds[0]
                samples += result.images
                sample_texts += result.infotexts
                sample_seeds += result.seeds
            if result.interrupted:
                interrupted = True
                break
        done = [c for c in cells if c is not None]
        if not done:
            return ScriptOutput(images=[], infotexts=[], seeds=[], interrupted=True)
        size = done[0].size
        cells = [c if c is not None else Image.new("RGB", size) for c in cells]
        first_text = next(t for t in texts if t)
        hor = [[Label(t)] for t in plan["x_labels"]]
        ver = [[Label(t)] for t in plan["y_labels"]]
        subgrids = []
        for iz in range(nz):
            part = cells[iz * nx * ny:(iz + 1) * nx * ny]
            grid = image_grid(part, rows=ny)
            if plan["draw_legend"]:
                grid = draw_annotations(grid, size[0], size[1], hor, ver, plan["margin"])
            subgrids.append(grid)
        if nz > 1:
            main = image_grid(subgrids, rows=1)
            if plan["draw_legend"]:
                sw, sh = subgrids[0].size
                main = draw_annotations(main, sw, sh, [[Label(t)] for t in plan["z_labels"]], [[Label("")]])
        else:
            main = subgrids[0]
        grid_text = append_params(first_text, [*plan["grid_params"], *plan["z_params"]])
        sub_texts = [append_params(texts[iz * nx * ny] or first_text, plan["grid_params"]) for iz in range(nz)]
        images, infotexts, out_seeds = [main], [grid_text], [seeds[0]]
        if plan["include_sub_grids"] and nz > 1:
            images += subgrids
            infotexts += sub_texts
            out_seeds += [seeds[iz * nx * ny] for iz in range(nz)]
        grid_count = len(images)
        if plan["include_lone_images"]:
            images += cells
            infotexts += texts
            out_seeds += seeds
        main.info["parameters"] = grid_text
        return ScriptOutput(images=images, infotexts=infotexts, seeds=out_seeds, grid_count=grid_count,
                            grid_prefix="xyz_grid", samples=samples, sample_infotexts=sample_texts,
                            sample_seeds=sample_seeds, interrupted=interrupted)
