"""A merge records its output's hashes (computed while writing) in the shared hash cache, so
the engine loads the new checkpoint without reading it a second time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sdcloud.checkpoints.hashing import HashCache
from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
from sdcloud.engine.demo import write_demo_checkpoint


def test_merge_output_hashes_land_in_the_cache(tmp_path: Path) -> None:
    a = write_demo_checkpoint(tmp_path / "a.safetensors", "sd15", seed=1)
    b = write_demo_checkpoint(tmp_path / "b.safetensors", "sd15", seed=2)
    cache = HashCache(tmp_path / "hashes.json")
    out = tmp_path / "merged.safetensors"
    result = merge_checkpoints(MergeOptions(a=a, b=b, output=out), hash_cache=cache)
    reopened = HashCache(tmp_path / "hashes.json")  # what a restarted engine reads
    cached = reopened.get(out, compute=False)
    assert cached is not None and cached.sha256 == result.hashes.sha256
    assert cached.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
