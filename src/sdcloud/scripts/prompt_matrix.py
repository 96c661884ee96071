"""Prompt matrix: the prompt split at ``|``; every combination of the optional parts is made,
laid out with the parts as row and column headings (absent parts grey and struck through),
as A1111's ``scripts/prompt_matrix.py``.

``script_args``: ``put_at_start, different_seeds, prompt_type ("positive"|"negative"),
variations_delimiter ("comma"|"space"), margin_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sdcloud.errors import BadRequest
from sdcloud.scripts.base import (
    Generate,
    Script,
    ScriptArg,
    ScriptEnv,
    ScriptOutput,
    as_bool,
    as_choice,
    as_number,
)

MAX_PARTS = 8  # 2**8 = 256 images


class PromptMatrix(Script):
    title = "Prompt matrix"

    def args(self, is_img2img: bool, env: ScriptEnv | None = None) -> list[ScriptArg]:
        return [ScriptArg("Set at prompt start", False), ScriptArg("Random seeds", False),
                ScriptArg("Prompt type", "positive", choices=["positive", "negative"]),
                ScriptArg("Joining char", "comma", choices=["comma", "space"]),
                ScriptArg("Grid margins", 0, minimum=0, maximum=500, step=2)]

    def prepare(self, args: Sequence[Any], fields: dict[str, Any], env: ScriptEnv,
                is_img2img: bool) -> dict[str, Any]:
        a = self.positional(args, is_img2img)
        at_start = as_bool(a[0], "put_at_start")
        different = as_bool(a[1], "different_seeds")
        kind = as_choice(a[2], "prompt_type", ["positive", "negative"])
        delimiter = ", " if as_choice(a[3], "variations_delimiter", ["comma", "space"]) == "comma" else " "
        margin = as_number(a[4], "margin_size", 0, 500, int)
        key = "prompt" if kind == "positive" else "negative_prompt"
        parts = fields[key].split("|")
        if len(parts) < 2:
            raise BadRequest(f"Prompt matrix needs the {kind} prompt split with '|' (e.g. 'a cat|in snow|at night')")
        if len(parts) - 1 > MAX_PARTS:
            raise BadRequest(f"Prompt matrix: at most {MAX_PARTS} '|' parts ({2 ** MAX_PARTS} images)")
        count = 2 ** (len(parts) - 1)
        if count * int(fields.get("batch_size", 1)) > env.max_images:
            raise BadRequest(f"Prompt matrix would make {count} images; at most {env.max_images}")
        cells = []
        for combo in range(count):
            chosen = [t.strip().strip(",") for n, t in enumerate(parts[1:]) if combo & (1 << n)]
            chosen = [*chosen, parts[0]] if at_start else [parts[0], *chosen]
            f = dict(fields, batch_size=1, n_iter=1)
            f[key] = delimiter.join(chosen)
            f["seed"] = (int(fields["seed"]) + (combo if different else 0)) % 2**32
            cells.append({"fields": f, "model": None, "vae": "keep"})
        return {"cells": cells, "parts": parts, "margin": margin}

    def run(self, plan: dict[str, Any], fields: dict[str, Any], generate: Generate,
            init_images: list[Any]) -> ScriptOutput:
        from sdcloud.scripts.grid import Label, draw_annotations, image_grid

        images, texts, seeds = [], [], []
        interrupted = False
        for cell in plan["cells"]:
            result = generate(cell["fields"], cell["model"], cell["vae"])
            images += result.images[:1]
            texts += result.infotexts[:1]
            seeds += result.seeds[:1]
            if result.interrupted:
                interrupted = True
                break
        if len(images) < len(plan["cells"]):
            return ScriptOutput(images=images, infotexts=texts, seeds=seeds, samples=list(images),
                                sample_infotexts=list(texts), sample_seeds=list(seeds), interrupted=True)
        parts = plan["parts"][1:]
        boundary = math.ceil(len(parts) / 2)
        horiz, vert = parts[:boundary], parts[boundary:]
        grid = image_grid(images, rows=1 << len(vert))
        hor = [[Label(t.strip(), bool(pos & (1 << i))) for i, t in enumerate(horiz)] for pos in range(1 << len(horiz))]
        ver = [[Label(t.strip(), bool(pos & (1 << i))) for i, t in enumerate(vert)] for pos in range(1 << len(vert))]
        w, h = images[0].size
        grid = draw_annotations(grid, w, h, hor, ver, plan["margin"])
        grid.info["parameters"] = texts[0]
        return ScriptOutput(images=[grid, *images], infotexts=[texts[0], *texts], seeds=[seeds[0], *seeds],
                            grid_count=1, grid_prefix="prompt_matrix", samples=list(images),
                            sample_infotexts=list(texts), sample_seeds=list(seeds), interrupted=interrupted)
