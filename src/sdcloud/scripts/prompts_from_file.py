"""Prompts from file or textbox: one generation per line, as A1111's
``scripts/prompts_from_file.py``. A line is a prompt, or command-line style options
(``--prompt "a cat" --steps 10 --sampler_name "Euler a"``) that override the request.

``script_args``: ``checkbox_iterate, checkbox_iterate_batch, prompt_position ("start"|"end"),
prompt_txt``. (A1111 before 1.8 had no ``prompt_position``; three arguments are read that way.)
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any

from sdcloud.errors import BadRequest, NotFound
from sdcloud.scripts.base import (
    Generate,
    Script,
    ScriptArg,
    ScriptEnv,
    ScriptOutput,
    as_bool,
    as_choice,
    random_seed,
)

MAX_LINES = 1000


def _bool(text: str) -> bool:
    return text == "true"


_TAGS: dict[str, Callable[[str], Any]] = {
    "sd_model": str, "prompt": str, "negative_prompt": str, "styles": str,
    "seed": int, "subseed_strength": float, "subseed": int, "seed_resize_from_h": int,
    "seed_resize_from_w": int, "sampler_index": int, "sampler_name": str, "batch_size": int,
    "n_iter": int, "steps": int, "cfg_scale": float, "width": int, "height": int,
    "restore_faces": _bool, "tiling": _bool, "do_not_save_samples": _bool, "do_not_save_grid": _bool,
    "outpath_samples": str, "outpath_grids": str, "prompt_for_display": str,
}
_IGNORED = {"outpath_samples", "outpath_grids", "prompt_for_display", "do_not_save_samples",
            "do_not_save_grid", "restore_faces", "sampler_index"}


def parse_line(line: str) -> dict[str, Any]:
    """``--tag value`` pairs; ``--prompt``/``--negative_prompt`` take words up to the next
    ``--``. A line that is not options (or fails to parse, as A1111 falls back) is a prompt."""
    if "--" not in line:
        return {"prompt": line}
    try:
        args = shlex.split(line)
    except ValueError:
        return {"prompt": line}
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--") or pos + 1 >= len(args):
            return {"prompt": line}
        tag = arg[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            words = [args[pos]]
            pos += 1
            while pos < len(args) and not args[pos].startswith("--"):
                words.append(args[pos])
                pos += 1
            out[tag] = " ".join(words)
            continue
        conv = _TAGS.get(tag)
        if conv is None:
            raise BadRequest(f"Prompts from file: unknown option --{tag} in line {line!r}; "
                             f"known: {', '.join('--' + t for t in sorted(_TAGS))}")
        try:
            out[tag] = conv(args[pos + 1])
        except ValueError:
            raise BadRequest(f"Prompts from file: --{tag} {args[pos + 1]!r} is not valid") from None
        pos += 2
    return out


class PromptsFromFile(Script):
    title = "Prompts from file or textbox"

    def args(self, is_img2img: bool, env: ScriptEnv | None = None) -> list[ScriptArg]:
        return [ScriptArg("Iterate seed every line", False),
                ScriptArg("Use same random seed for all lines", False),
                ScriptArg("Insert prompts at the", "start", choices=["start", "end"]),
                ScriptArg("List of prompt inputs", "")]

    def prepare(self, args: Sequence[Any], fields: dict[str, Any], env: ScriptEnv,
                is_img2img: bool) -> dict[str, Any]:
        a = list(args)
        if len(a) == 3 and isinstance(a[2], str) and a[2].strip().lower() not in ("start", "end"):
            a = [a[0], a[1], "start", a[2]]  # A1111 < 1.8: no prompt_position
        a = self.positional(a, is_img2img)
        iterate = as_bool(a[0], "checkbox_iterate")
        same_seed = as_bool(a[1], "checkbox_iterate_batch")
        position = as_choice(a[2], "prompt_position", ["start", "end"])
        if not isinstance(a[3], str):
            raise BadRequest("prompt_txt (the list of prompt inputs) must be text")
        lines = [x for x in (x.strip() for x in a[3].splitlines()) if x]
        if not lines:
            raise BadRequest("Prompts from file or textbox: the list of prompt inputs is empty")
        if len(lines) > MAX_LINES:
            raise BadRequest(f"Prompts from file or textbox: at most {MAX_LINES} lines")
        seed = int(fields["seed"])
        cells, total = [], 0
        for line in lines:
            opts = parse_line(line)
            f = dict(fields)
            model = None
            for k, v in opts.items():
                if k in _IGNORED:
                    continue
                if k == "sd_model":
                    try:
                        model = env.resolve_model(v)
                    except NotFound:
                        raise BadRequest(f"Unknown checkpoint: {v}") from None
                elif k == "sampler_name":
                    f["sampler_name"], f["scheduler"] = env.resolve_sampler(v, f.get("scheduler"))
                elif k == "styles":
                    f["prompt"], f["negative_prompt"] = env.apply_styles(
                        f["prompt"], f["negative_prompt"], [s.strip() for s in v.split(",") if s.strip()])
                elif k in ("prompt", "negative_prompt"):
                    base = fields[k]
                    f[k] = v if not base else (f"{v} {base}" if position == "start" else f"{base} {v}")
                else:
                    f[k] = v
            if "seed" not in opts:
                if iterate or same_seed or not env.seed_was_random:
                    f["seed"] = seed
                else:
                    f["seed"] = random_seed()
            if iterate:
                seed = (seed + int(f["batch_size"]) * int(f["n_iter"])) % 2**32
            _check(f, line)
            total += int(f["batch_size"]) * int(f["n_iter"])
            cells.append({"fields": f, "model": model, "vae": "keep"})
        if total > env.max_images:
            raise BadRequest(f"Prompts from file or textbox would make {total} images; at most {env.max_images}")
        return {"cells": cells}

    def run(self, plan: dict[str, Any], fields: dict[str, Any], generate: Generate,
            init_images: list[Any]) -> ScriptOutput:
        images, texts, seeds = [], [], []
        interrupted = False
        for cell in plan["cells"]:
            result = generate(cell["fields"], cell["model"], cell["vae"])
            images += result.images
            texts += result.infotexts
            seeds += result.seeds
            if result.interrupted:
                interrupted = True
                break
        return ScriptOutput(images=images, infotexts=texts, seeds=seeds, samples=list(images),
                            sample_infotexts=list(texts), sample_seeds=list(seeds), interrupted=interrupted)


def _check(f: dict[str, Any], line: str) -> None:
    for name, lo, hi in (("steps", 1, 150), ("batch_size", 1, 64), ("n_iter", 1, 100),
                         ("width", 64, 4096), ("height", 64, 4096)):
        if not lo <= int(f[name]) <= hi:
            raise BadRequest(f"Prompts from file: {name} must be between {lo} and {hi} (line {line!r})")
    if not 0 <= float(f["cfg_scale"]) <= 100:
        raise BadRequest(f"Prompts from file: cfg_scale must be between 0 and 100 (line {line!r})")
    if not -1 <= int(f["seed"]) < 2**32:
        raise BadRequest(f"Prompts from file: seed out of range (line {line!r})")
    if int(f["seed"]) == -1:
        f["seed"] = random_seed()
