"""The streaming merge's peak memory does not grow with the model's size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from sdcloud.checkpoints import layouts
from sdcloud.checkpoints.stream import Entry, StreamWriter
from test_ckpt_synthetic import TINY_SD15

FILLER = (1024, 1024)  # 2 MiB per fp16 tensor
CHILD = """
import json, resource, sys
from pathlib import Path
import torch
from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
a, b, out = map(Path, sys.argv[1:4])
merge_checkpoints(MergeOptions(a=a, b=b, output=out, alpha=0.5, device="cpu"))
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
"""


def _write(path: Path, fillers: int, seed: int) -> None:
    """A tiny SD 1.5 plus ``fillers`` UNet-sized tensors, written tensor by tensor."""
    shapes = {**layouts.checkpoint(TINY_SD15),
              **{f"model.diffusion_model.middle_block.1.filler.{i}.weight": FILLER for i in range(fillers)}}
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 * FILLER[0] * FILLER[1], generator=gen).to(torch.float16)
    entries = [Entry(k, "I64" if k.endswith("position_ids") else "F16", s) for k, s in shapes.items()]
    with StreamWriter(path, entries) as w:
        for i, e in enumerate(entries):
            if e.dtype == "I64":
                w.write(e.name, torch.arange(77).reshape(e.shape))
            else:
                n = e.nbytes // 2
                start = (i * 7919) % (pool.numel() - n + 1)
                w.write(e.name, pool[start:start + n].reshape(e.shape))


def _peak(tmp_path: Path, fillers: int) -> int:
    a, b = tmp_path / f"a{fillers}.safetensors", tmp_path / f"b{fillers}.safetensors"
    _write(a, fillers, 1)
    _write(b, fillers, 2)
    out = tmp_path / f"m{fillers}.safetensors"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(a), str(b), str(out)], check=True,
                          capture_output=True, text=True)
    for p in (a, b, out):
        p.unlink()
    return int(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_peak_rss_does_not_grow_with_model_size(tmp_path: Path) -> None:
    small = _peak(tmp_path, 16)  # inputs of ~32 MiB each
    large = _peak(tmp_path, 128)  # ~256 MiB each: a full-load merge would need ~700 MiB more
    print(f"peak RSS {small / 2**20:.0f} MiB -> {large / 2**20:.0f} MiB")
    assert large - small < 64 * 2**20, f"peak RSS grew by {(large - small) / 2**20:.0f} MiB"
