"""``sdcloud generate``: txt2img / img2img / inpaint from the command line."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest, NotFound, SdcloudError
from sdcloud.i18n import _

DONE = "done"
POLL_S = 0.1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate images (txt2img, img2img, inpaint)",
                       description="Generate images into the outputs folder (A1111 layout, infotext in each "
                       "PNG); with a store configured (the config file or SDCLOUD_STORE) they are uploaded "
                       "there too.")
    p.add_argument("prompt", help="prompt, with A1111 syntax: (word:1.2), [a:b:0.5], BREAK, <lora:name:0.8>")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--model", help="checkpoint name or path, or 'demo' / 'demo-xl' (default: settings or demo)")
    p.add_argument("--vae", help="VAE from models/VAE (default: the model's own)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="DPM++ 2M", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'")
    p.add_argument("--scheduler", default="Automatic", help="schedule type: Automatic, Karras, Exponential, ...")
    p.add_argument("--cfg", type=float, default=7.0, help="CFG scale")
    p.add_argument("--seed", type=int, default=-1, help="-1 = random; image i of a batch gets seed+i")
    p.add_argument("--variation-seed", type=int, default=-1)
    p.add_argument("--variation-strength", type=float, default=0.0)
    p.add_argument("--size", default="512x512", help="WIDTHxHEIGHT, multiples of 8")
    p.add_argument("--batch", type=int, default=1, help="images per batch (batch size)")
    p.add_argument("--batch-count", type=int, default=1, help="number of batches (n_iter)")
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--init-image", help="img2img: the starting image")
    p.add_argument("--mask", help="inpaint: mask image (white = repaint)")
    p.add_argument("--denoise", type=float, help="denoising strength (img2img default 0.75, hires 0.7)")
    p.add_argument("--resize-mode", type=int, default=0, help="0 resize, 1 crop, 2 fill, 3 latent")
    p.add_argument("--mask-blur", type=int, default=4)
    p.add_argument("--masked-content", default="original", choices=["fill", "original", "latent noise",
                                                                       "latent nothing"])
    p.add_argument("--only-masked", action="store_true", help="inpaint at full resolution around the mask")
    p.add_argument("--hires", action="store_true", help="hires fix (second pass at a larger size)")
    p.add_argument("--hr-scale", type=float, default=2.0)
    p.add_argument("--hr-upscaler", default="Latent")
    p.add_argument("--hr-steps", type=int, default=0, help="second-pass steps (0 = same as --steps)")
    p.add_argument("--hr-checkpoint", help="checkpoint for the second pass (default: the same model)")
    p.add_argument("--hr-sampler", help="sampler for the second pass (default: the same)")
    p.add_argument("--hr-scheduler", help="schedule type for the second pass (default: the same)")
    p.add_argument("--hr-prompt", default="", help="prompt for the second pass (default: the same)")
    p.add_argument("--hr-negative", default="", help="negative prompt for the second pass (default: the same)")
    p.add_argument("--refiner", help="refiner checkpoint: sampling goes on with it from --refiner-switch-at")
    p.add_argument("--refiner-switch-at", type=float, default=0.8,
                   help="fraction of the sampling done before the refiner takes over (0-1)")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"])
    p.add_argument("--medvram", action="store_true", help="model CPU offload (less VRAM)")
    p.add_argument("--lowvram", action="store_true", help="sequential CPU offload (least VRAM, slow)")
    p.add_argument("--vae-tiling", action="store_true", help="decode large images in tiles")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise BadRequest(f"--size must look like 512x768, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _open_image(path: str, what: str):  # noqa: ANN202 - PIL type imported lazily
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise NotFound(f"{what} {path} not found") from None
    except (UnidentifiedImageError, OSError):
        raise BadRequest(f"{what} {path} is not a readable image") from None


def _request(args: argparse.Namespace, settings: Any) -> Any:
    """The flags as a ``GenerationRequest`` (images not loaded yet)."""
    from sdcloud.engine.types import GenerationRequest

    width, height = _size(args.size)
    fill = ["fill", "original", "latent noise", "latent nothing"].index(args.masked_content)
    return GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, subseed=args.variation_seed,
        subseed_strength=args.variation_strength, sampler_name=args.sampler, scheduler=args.scheduler,
        batch_size=args.batch, n_iter=args.batch_count, steps=args.steps, cfg_scale=args.cfg, width=width,
        height=height, clip_skip=args.clip_skip, enable_hr=args.hires, denoising_strength=args.denoise,
        hr_scale=args.hr_scale, hr_upscaler=args.hr_upscaler, hr_second_pass_steps=args.hr_steps,
        resize_mode=args.resize_mode, mask_blur=args.mask_blur, inpainting_fill=fill,
        inpaint_full_res=args.only_masked, model=args.model or settings.model or "demo", vae=args.vae,
        hr_checkpoint_name=args.hr_checkpoint, hr_sampler_name=args.hr_sampler, hr_scheduler=args.hr_scheduler,
        hr_prompt=args.hr_prompt, hr_negative_prompt=args.hr_negative, refiner_checkpoint=args.refiner,
        refiner_switch_at=args.refiner_switch_at,
    )


def run(args: argparse.Namespace) -> int:
    memory = "lowvram" if args.lowvram else "medvram" if args.medvram else None
    settings = load_settings(args, device=args.device, dtype=args.dtype, memory=memory,
                             vae_tiling=True if args.vae_tiling else None)
    req = _request(args, settings)
    if args.init_image:
        req.init_images = [_open_image(args.init_image, "init image")]
    if args.mask:
        req.mask = _open_image(args.mask, "mask")
    from sdcloud.engine.request_rules import validate
    from sdcloud.upscalers.registry import Upscalers

    validate(req, settings.limits, Upscalers(settings.models_root))  # fail fast, before loading a model
    from sdcloud.catalog import Catalog
    from sdcloud.engine.loader import DEMO_KINDS

    for name in (req.refiner_checkpoint, req.hr_checkpoint_name if req.enable_hr else None):
        if name and name not in DEMO_KINDS and name not in ("None", "Use same checkpoint"):
            Catalog(settings).resolve("checkpoint", name)  # ... and before loading a model: a missing one
    # The same runner, journal and outbox as the server: a configured store gets the images.
    # The job journal is this run's own, so a server on the same data folder is not disturbed.
    from sdcloud.runtime import Runtime

    runtime = Runtime(settings, restore_session=False,
                      queue_dir=settings.state_path / "generate" / uuid.uuid4().hex)
    try:
        return _generate(args, runtime, req)
    finally:
        runtime.stop()
        shutil.rmtree(runtime.queue_dir, ignore_errors=True)


def _generate(args: argparse.Namespace, runtime: Any, req: Any) -> int:
    from tqdm import tqdm

    from sdcloud.image_files import image_bytes
    from sdcloud.jobs.generation import generation_payload

    print(_("loading model {model} ...").format(model=req.model), file=sys.stderr)
    info = runtime.host.ensure_model(req.model)
    if info.is_demo:
        print(_("note: the demo model has random weights; its images are noise"), file=sys.stderr)
    runtime.host.ensure_vae(req.vae)
    files = {f"init-{i}.png": image_bytes(img) for i, img in enumerate(req.init_images)}
    if req.mask is not None:
        files["mask.png"] = image_bytes(req.mask)
    payload = generation_payload(req, model=req.model, vae=req.vae, init_images=list(files)[:len(req.init_images)],
                                 mask="mask.png" if req.mask is not None else None, return_grid=False)
    kind = "img2img" if req.is_img2img else "txt2img"
    runtime.start(watch_session=False, fetch_checkpoints=False)
    job = runtime.queue.submit(kind, payload, files)
    bar = tqdm(total=1, unit="step", desc=_("generating"), file=sys.stderr, dynamic_ncols=True)
    try:
        while not job.finished_state:
            job = runtime.queue.wait(job.id, timeout=POLL_S)
            bar.total, bar.n = max(job.steps, 1), job.step
            bar.refresh()
    except KeyboardInterrupt:
        runtime.queue.cancel(job.id)
        job = runtime.queue.wait(job.id)
        print(_("sdcloud: interrupted; the images of finished batches were saved"), file=sys.stderr)
        return 130
    finally:
        bar.close()
    if job.state != DONE:
        raise SdcloudError(job.error or f"generation {job.state}")
    paths = runtime.image_files(job)
    result_info = job.result["info"]
    if args.json:
        print(json.dumps({"images": [str(p) for p in paths], "seeds": result_info.get("all_seeds", [])[:len(paths)],
                          "infotexts": result_info.get("infotexts", []),
                          "model": result_info.get("sd_model_name")}, indent=2))
    else:
        for path in paths:
            print(path)
        print(_("{n} image(s) in {folder}").format(n=len(paths), folder=Path(paths[0]).parent) if paths
              else _("no images"), file=sys.stderr)
    return 0
