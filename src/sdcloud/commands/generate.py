"""``sdcloud generate``: txt2img / img2img / inpaint from the command line."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest, NotFound


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate images (txt2img, img2img, inpaint)",
                       description="Generate images into the outputs folder (A1111 layout, infotext in each PNG).")
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


def run(args: argparse.Namespace) -> int:
    memory = "lowvram" if args.lowvram else "medvram" if args.medvram else None
    settings = load_settings(args, device=args.device, dtype=args.dtype, memory=memory,
                             vae_tiling=True if args.vae_tiling else None)
    width, height = _size(args.size)
    fill = ["fill", "original", "latent noise", "latent nothing"].index(args.masked_content)
    from sdcloud.engine.types import CancelToken, GenerationRequest

    req = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, subseed=args.variation_seed,
        subseed_strength=args.variation_strength, sampler_name=args.sampler, scheduler=args.scheduler,
        batch_size=args.batch, n_iter=args.batch_count, steps=args.steps, cfg_scale=args.cfg, width=width,
        height=height, clip_skip=args.clip_skip, enable_hr=args.hires, denoising_strength=args.denoise,
        hr_scale=args.hr_scale, hr_upscaler=args.hr_upscaler, hr_second_pass_steps=args.hr_steps,
        resize_mode=args.resize_mode, mask_blur=args.mask_blur, inpainting_fill=fill,
        inpaint_full_res=args.only_masked, model=args.model or settings.model or "demo", vae=args.vae,
    )
    if args.init_image:
        req.init_images = [_open_image(args.init_image, "init image")]
    if args.mask:
        req.mask = _open_image(args.mask, "mask")
    from sdcloud.engine.sampling_loop import validate

    validate(req, settings.limits)  # fail fast, before loading a model
    settings.ensure_dirs()
    from tqdm import tqdm

    from sdcloud.engine.engine import Engine
    from sdcloud.outputs import save_result

    engine = Engine(settings)
    print(f"loading model {req.model} ...", file=sys.stderr)
    info = engine.load_model(req.model or "demo")
    if info.is_demo:
        print("note: the demo model has random weights; its images are noise", file=sys.stderr)
    cancel = CancelToken()
    bar = tqdm(total=1, unit="step", desc="generating", file=sys.stderr, dynamic_ncols=True)

    def on_progress(p) -> None:  # noqa: ANN001
        bar.total = p.steps
        bar.n = p.step
        bar.refresh()

    try:
        result = engine.generate(req, progress=on_progress, cancel=cancel)
    except KeyboardInterrupt:
        bar.close()
        print("sdcloud: interrupted; nothing was saved for the unfinished batch", file=sys.stderr)
        return 130
    finally:
        bar.close()
    kind = "img2img" if req.is_img2img else "txt2img"
    paths = save_result(result, settings, kind)
    if args.json:
        print(json.dumps({"images": [str(p) for p in paths], "seeds": result.seeds,
                          "infotexts": result.infotexts, "model": result.model_name}, indent=2))
    else:
        for path in paths:
            print(path)
        print(f"{len(paths)} image(s) in {Path(paths[0]).parent}" if paths else "no images", file=sys.stderr)
    return 0
