"""ControlNet overhead: txt2img with one ControlNet unit vs plain txt2img, same model, seed,
steps and size, measured in one run (demo model and a random ControlNet built from its UNet,
or --model with --controlnet for real files).

    .venv/bin/python bench/controlnet_overhead.py [--runs 5] [--steps 10] [--size 256]

Prints each median and the ratio with/without (expected about 1.3-1.6 on a real SD 1.5 model:
a ControlNet is roughly the UNet's encoder half, run at every step). On the tiny demo model
the ratio is much higher (3.4 at 128 px on a shared 2-core CPU): the ControlNet's full-size
hint encoder (16-256 channels at image resolution) dwarfs the demo UNet.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--controlnet", default=None, help="a ControlNet file name in models/ControlNet")
    args = ap.parse_args()

    from PIL import Image, ImageDraw

    from sdcloud.controlnet.fixtures import save_controlnet
    from sdcloud.controlnet.units import ControlUnit
    from sdcloud.engine.engine import Engine
    from sdcloud.engine.types import GenerationRequest
    from sdcloud.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="sdcloud-bench-"))) if args.model == "demo" \
        else Settings()
    engine = Engine(settings)
    engine.load_model(args.model)
    name = args.controlnet
    if name is None:
        save_controlnet(settings.models_root / "ControlNet" / "bench_cn.safetensors", engine.pipeline.unet)
        name = "bench_cn"
    hint = Image.new("RGB", (args.size, args.size), "white")
    ImageDraw.Draw(hint).ellipse((20, 20, args.size - 20, args.size - 20), outline="black", width=6)
    base = dict(prompt="a photo of a ring", steps=args.steps, width=args.size, height=args.size, seed=1,
                sampler_name="Euler")
    cases = {"plain": GenerationRequest(**base),
             "controlnet": GenerationRequest(**base, controlnet=[ControlUnit(module="canny", model=name,
                                                                               image=hint)])}
    medians = {}
    for label, req in cases.items():
        engine.generate(req)  # warm up (loads the ControlNet)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            engine.generate(req)
            times.append(time.perf_counter() - t0)
        medians[label] = statistics.median(times)
        print(f"{label:10s} median {medians[label]:.3f}s ({engine.device.type}, {args.size}px, {args.steps} steps)")
    print(f"controlnet/plain: {medians['controlnet'] / medians['plain']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
