"""Running a script's plan in the queue worker: one engine call per cell, progress counted
over the whole script, results saved in A1111's layout (samples in ``*-images``, grids in
``*-grids`` named ``xyz_grid-NNNNN-<seed>.png``)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

from sdcloud.engine.types import GenerationRequest, Progress
from sdcloud.errors import BadRequest
from sdcloud.jobs.base import JobContext
from sdcloud.jobs.gpu import INTERACTIVE
from sdcloud.scripts import find
from sdcloud.scripts.base import ScriptOutput

_grid_lock = threading.Lock()


def run_script(runner: Any, ctx: JobContext, request: GenerationRequest) -> dict[str, Any]:
    """Run the script in ``ctx.payload["script"]`` on the job's ``request`` (init images and
    ControlNet units already loaded); returns the job result (``images``, ``info``,
    ``interrupted``), as a plain generation does."""
    p = ctx.payload
    base = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    spec = p["script"]
    is_img2img = ctx.job.kind == "img2img"
    script = find(spec["title"], is_img2img)
    if script is None:
        raise BadRequest(f"Script '{spec['title']}' not found")
    plan = spec["plan"]
    host = runner.host
    every = int(p.get("preview_every") or 0)
    expected = max(1, len(plan.get("cells", [])))
    calls = {"n": 0}
    first_info: dict[str, Any] = {}

    def generate(fields: dict[str, Any], model: str | None, vae: Any) -> Any:
        index = calls["n"]
        calls["n"] += 1
        count = max(expected, index + 1)

        def progress(pr: Progress) -> None:
            keep = every > 0 and (pr.step % every == 0 or pr.step == pr.steps)
            per = max(1, pr.steps)
            ctx.report(Progress(index * per + pr.step, count * per, index, count,
                                pr.preview if keep else None))

        fields = dict(fields)
        restore = fields.pop("restore_faces", None)  # an X/Y/Z Face restore cell: a name, or "" for none
        faces = p.get("restore_faces") if restore is None else (restore or None)
        req = dataclasses.replace(request, **{**fields, "model": None, "vae": None})
        host.ensure_model(model or p.get("model"))
        host.ensure_vae(p.get("vae") if vae == "keep" else vae)
        result = host.engine.generate(req, progress=progress, cancel=ctx.cancel, preview=every > 0)
        if faces:  # restore_faces (the request's or the cell's), as a plain generation does
            from sdcloud.jobs.generation import restore_faces

            restore_faces(runner.settings, host.engine, result, faces)
        if not first_info:
            first_info.update(result.info)
        return result

    with host.gpu.hold(INTERACTIVE):
        out = script.run(plan, base, generate, list(base.get("init_images") or []))
    if not out.images:
        raise BadRequest(f"{script.title}: no image was made (interrupted before the first one)")
    info = _info(first_info, out, p)
    paths = _write(runner, ctx, out, p, is_img2img)
    if getattr(runner, "on_image", None) is not None and paths:  # the session's first image, saved or not
        runner.on_image(paths[0].name if p.get("save_images") else f"{ctx.job.kind} (not saved)")
    if p.get("save_images"):
        keys = [x.relative_to(runner.settings.outputs_path).as_posix() for x in paths]
    else:
        keys = [ctx.output_key(x.name) for x in paths]
    result = {"images": keys, "info": info, "interrupted": out.interrupted}
    if p.get("save_images"):
        from sdcloud.durable import write_text_durable
        from sdcloud.jobs.generation import SAVED_RECORD

        write_text_durable(ctx.output_dir / SAVED_RECORD, json.dumps(result))
        if runner.on_saved is not None:
            runner.on_saved(paths)
    return result


def _info(first: dict[str, Any], out: ScriptOutput, p: dict[str, Any]) -> dict[str, Any]:
    info = dict(first)
    seeds = out.sample_seeds or out.seeds
    info.update({
        "infotexts": out.infotexts,
        "all_seeds": seeds,
        "all_prompts": info.get("all_prompts", [])[:1] * max(1, len(seeds)),
        "index_of_first_image": 1 if out.grid_count else 0,
        "styles": list(p.get("styles") or []),
    })
    if seeds:
        info["seed"] = seeds[0]
    return info


def _write(runner: Any, ctx: JobContext, out: ScriptOutput, p: dict[str, Any], is_img2img: bool) -> list[Path]:
    from sdcloud.image_files import image_bytes

    kind = "img2img" if is_img2img else "txt2img"
    for img, text in zip(out.images, out.infotexts, strict=False):
        img.info["parameters"] = text
    if not p.get("save_images"):
        fmt = p.get("samples_format", "png")
        ext = "jpg" if fmt == "jpeg" else fmt
        paths = []
        for i, img in enumerate(out.images):
            path = ctx.output_dir / f"{i:05d}.{ext}"
            path.write_bytes(image_bytes(img, fmt, int(p.get("jpeg_quality", 80))))
            paths.append(path)
        return paths
    from sdcloud.image_files import write_png_atomic
    from sdcloud.outputs import output_dir, save_images

    samples = save_images(out.samples, out.sample_infotexts, out.sample_seeds, runner.settings, kind=kind)
    grids_dir = runner.settings.outputs_path / f"{kind}-grids" / output_dir(runner.settings, kind).name
    grid_paths = []
    if out.grid_count:
        grids_dir.mkdir(parents=True, exist_ok=True)
        with _grid_lock:
            number = _next_grid_number(grids_dir)
            for i in range(out.grid_count):
                path = grids_dir / f"{out.grid_prefix}-{number:05d}-{out.seeds[i]}.png"
                write_png_atomic(out.images[i], path, out.infotexts[i])
                grid_paths.append(path)
                number += 1
    lone = len(out.images) - out.grid_count
    return [*grid_paths, *samples[:lone]] if out.grid_count else list(samples)


def _next_grid_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for f in folder.iterdir() if (m := re.search(r"-(\d{5})-", f.name))]
    return max(numbers, default=-1) + 1
