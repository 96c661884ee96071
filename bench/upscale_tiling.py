"""Upscaler tiling: a 4x ESRGAN (RRDBNet) pass over one image, tiled (A1111's 192 px tiles,
8 px overlap) vs untiled, same random-weight model and image, in one run; plus the peak
activation size each needs (on CUDA: max allocated memory; elsewhere: the largest tensor
the network sees, as a proxy).

    .venv/bin/python bench/upscale_tiling.py [--size 384] [--runs 3] [--tile 192] [--nf 32] [--nb 6]

Prints each median time, the throughput ratio tiled/untiled (target >= 0.8 on a GPU: tiling
costs little) and the peak-memory ratio (target: well below 1 on big images). On a shared
2-core CPU the tiled run was 0.35x as fast (256 px, nf 32, nb 4): CPU convolutions on small
tiles are inefficient there; tiling exists for VRAM, and the CPU numbers are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--nf", type=int, default=32)
    ap.add_argument("--nb", type=int, default=6)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from sdcloud.upscalers import Upscalers, fixtures

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(tempfile.mkdtemp(prefix="sdcloud-bench-"))
    fixtures.save_esrgan_old(root / "ESRGAN" / "4x-bench.pth", nf=args.nf, nb=args.nb, gc=args.nf // 2)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))
    results = {}
    for label, tile in (("untiled", 0), ("tiled", args.tile)):
        ups = Upscalers(root, device, torch.float16 if device.type == "cuda" else None, tile=tile,
                        overlap=args.overlap)
        ups.upscale_once(img, "4x-bench")  # load + warm up
        peak = _peak(ups, img, device, tile, args.overlap)
        times = []
        for _ in range(args.runs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = ups.upscale_once(img, "4x-bench")
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        assert out.size == (args.size * 4, args.size * 4)
        results[label] = (statistics.median(times), peak)
        print(f"{label:8s} median {results[label][0]:.3f}s  peak {peak / 2**20:.1f} MiB  ({device.type}, "
              f"{args.size}px -> {args.size * 4}px)")
    speed = results["untiled"][0] / results["tiled"][0]
    mem = results["tiled"][1] / results["untiled"][1]
    print(f"throughput tiled/untiled: {speed:.2f}  (target >= 0.8)")
    print(f"peak memory tiled/untiled: {mem:.2f}")
    return 0


def _peak(ups: object, img: object, device: object, tile: int, overlap: int) -> int:
    """Peak bytes for one pass: CUDA's counter, else the largest activation (forward hooks)."""
    import torch

    if device.type == "cuda":  # type: ignore[attr-defined]
        torch.cuda.reset_peak_memory_stats()
        ups.upscale_once(img, "4x-bench")  # type: ignore[attr-defined]
        return int(torch.cuda.max_memory_allocated())
    largest = [0]
    net = ups.model("4x-bench").net  # type: ignore[attr-defined]

    def hook(_m: object, _i: object, out: torch.Tensor) -> None:
        largest[0] = max(largest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ups.upscale_once(img, "4x-bench")  # type: ignore[attr-defined]
    for h in handles:
        h.remove()
    return largest[0]


if __name__ == "__main__":
    raise SystemExit(main())
