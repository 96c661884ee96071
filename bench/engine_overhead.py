"""Engine overhead: sdcloud's txt2img vs a raw diffusers pipeline call, same model, scheduler,
steps and size, measured in one run on the demo model (or --model for a real checkpoint).

    .venv/bin/python bench/engine_overhead.py [--runs 15] [--steps 10] [--size 256] [--model demo]

Prints each median and the ratio (target: engine / raw <= 1.05), then `sdcloud --help` time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", default="demo")
    args = ap.parse_args()

    import torch

    from sdcloud.engine.engine import Engine
    from sdcloud.engine.sampler_names import build_scheduler
    from sdcloud.engine.types import GenerationRequest
    from sdcloud.settings import Settings

    engine = Engine(Settings(data_dir=Path(tempfile.mkdtemp(prefix="sdcloud-bench-"))))
    engine.load_model(args.model)
    pipe = engine.pipeline
    prompt, negative = "a photo of a cat in a hat, detailed", "blurry"
    req = GenerationRequest(prompt=prompt, negative_prompt=negative, steps=args.steps, width=args.size,
                            height=args.size, seed=1, sampler_name="Euler", scheduler="Automatic", cfg_scale=7.0)
    pipe.scheduler = build_scheduler("Euler", "Automatic", dict(pipe.scheduler.config))

    def ours() -> None:
        engine.generate(req)

    def raw() -> None:
        pipe(prompt, negative_prompt=negative, num_inference_steps=args.steps, width=args.size, height=args.size,
             guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(1))

    for fn in (ours, raw):  # warm-up
        fn()
    times: dict[str, list[float]] = {"engine": [], "raw": []}
    for _ in range(args.runs):  # interleave so machine noise hits both alike
        for name, fn in (("engine", ours), ("raw", raw)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device {engine.device}, model {args.model}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.runs} runs each")
    print(f"median engine {med['engine'] * 1000:.1f} ms, raw diffusers {med['raw'] * 1000:.1f} ms")
    print(f"ratio engine/raw = {med['engine'] / med['raw']:.3f} (target <= 1.05)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdcloud.cli", "--help"], capture_output=True, check=True)
    print(f"sdcloud --help: {(time.perf_counter() - t) * 1000:.0f} ms (includes Python start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
