"""The streaming I/O under every checkpoint tool: mapped reads, the output ring, O_DIRECT writes.

These are the parts that made a merge as fast as copying the files (bench/merge_memory.py);
each test checks what a user would see if they were wrong: a changed or corrupt output file,
a modified input, a crash instead of a message.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from sdcloud.checkpoints.arena import Arena
from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
from sdcloud.checkpoints.sink import BLOCK, BufferedSink, DirectSink, open_sink
from sdcloud.checkpoints.stream import Entry, SafetensorsSource, StreamWriter
from sdcloud.errors import CorruptFile, SdcloudError
from test_ckpt_synthetic import write_synthetic


def _direct_fd(path: Path) -> int:
    """An O_DIRECT file descriptor, or skip where this filesystem has none (tmpfs)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        pytest.skip("no O_DIRECT on this platform")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
        os.write(fd, memoryview(mmap.mmap(-1, BLOCK)))
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            pytest.skip(f"{path.parent} does not take O_DIRECT")
        raise
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@pytest.mark.parametrize("sizes", [[1], [BLOCK], [BLOCK + 1], [5000, 3, 8192 * 3 + 17, 0, 4095], [0]])
def test_direct_sink_writes_exactly_the_bytes_given(tmp_path: Path, sizes: list[int]) -> None:
    chunks = [os.urandom(n) for n in sizes]
    direct = DirectSink(_direct_fd(tmp_path / "d.bin"), staging_bytes=8192)
    buffered = BufferedSink(tmp_path / "b.bin")
    for c in chunks:
        direct.write(memoryview(c))
        buffered.write(c)
    direct.finish()
    buffered.finish()
    want = b"".join(chunks)
    assert (tmp_path / "d.bin").read_bytes() == want  # tail padding cut off, nothing lost at block edges
    assert (tmp_path / "b.bin").read_bytes() == want


def test_open_sink_uses_o_direct_where_it_can_and_falls_back(tmp_path: Path) -> None:
    os.close(_direct_fd(tmp_path / "probe.bin"))  # skips where the filesystem has no O_DIRECT
    sink = open_sink(tmp_path / "x.bin")
    assert isinstance(sink, DirectSink)
    sink.write(b"abc")
    sink.finish()
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    plain = open_sink(tmp_path / "y.bin", direct=False)
    assert isinstance(plain, BufferedSink)
    plain.close()


def _entries() -> tuple[list[Entry], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "small": torch.randn(3, generator=gen).half(),
        "ids": torch.arange(77).reshape(1, 77),
        "big": torch.randn(300, 1000, generator=gen),  # over the staging buffer, not block-sized
        "empty": torch.zeros(0, 4, dtype=torch.float16),
        "last": torch.randn(777, generator=gen).to(torch.bfloat16),
    }
    dtypes = {torch.float16: "F16", torch.int64: "I64", torch.float32: "F32", torch.bfloat16: "BF16"}
    return [Entry(k, dtypes[t.dtype], tuple(t.shape)) for k, t in tensors.items()], tensors


@pytest.mark.parametrize("direct", [True, False])
def test_stream_writer_output_is_a_valid_file_with_its_true_hash(tmp_path: Path, direct: bool) -> None:
    entries, tensors = _entries()
    out = tmp_path / "w.safetensors"
    with StreamWriter(out, entries, {"k": "v"}, direct=direct) as w:
        for e in entries:
            if e.name == "big":  # through the reusable ring, like a merged tensor
                w.write(e.name, w.buffer(e).copy_(tensors[e.name]))
            else:
                w.write(e.name, tensors[e.name])
    got = load_file(str(out))
    assert all(torch.equal(got[k], t) for k, t in tensors.items())
    assert w.hashes is not None and w.hashes.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


def test_arena_take_waits_until_the_writer_frees_space() -> None:
    arena = Arena(1024)
    first = arena.take(400)
    second = arena.take(400)
    assert first is not None and second is not None
    got: list[int] = []

    def taker() -> None:
        taken = arena.take(400)  # 224 bytes free: must wait for ``first``
        assert taken is not None
        got.append(taken[1].start)

    t = threading.Thread(target=taker)
    t.start()
    time.sleep(0.2)
    assert got == []
    arena.release(first[1])
    t.join(5)
    assert got == [0]  # wrapped to the front, where ``first`` was
    assert arena.take(600) is None  # over half the ring: the caller allocates it normally


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.booleans()), min_size=1, max_size=60))
def test_arena_spans_never_overlap_and_keep_their_bytes(ops: list[tuple[int, bool]]) -> None:
    arena = Arena(1024)
    live: list[tuple[torch.Tensor, object, int]] = []
    for i, (size, release_oldest) in enumerate(ops):
        if release_oldest and live or len(live) >= 3:
            view, span, mark = live.pop(0)
            assert bool((view == mark).all()), "a later allocation overwrote a live span"
            arena.release(span)
        while True:
            try:
                taken = arena.take(size, timeout=0)
                break
            except TimeoutError:  # the ring is fragmented: the writer would free the oldest first
                assert live, "an empty ring must always fit a request of at most half its size"
                view, span, mark = live.pop(0)
                assert bool((view == mark).all())
                arena.release(span)
        if taken is None:
            continue
        view, span = taken
        assert view.numel() == size and 0 <= span.start and span.end <= 1024
        for _, other, _ in live:
            assert span.end <= other.start or other.end <= span.start
        view.fill_(i % 251)
        live.append((view, span, i % 251))


def test_a_tensor_written_to_does_not_change_the_input_file(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    save_file({"w": torch.ones(5000)}, str(path))
    before = path.read_bytes()
    src = SafetensorsSource(path)
    t = src.get("w")
    t.mul_(3)  # the merge methods compute in place on their inputs' copies; this must stay private
    assert float(t[0]) == 3.0
    src.close()
    del t
    assert path.read_bytes() == before


def test_a_file_cut_short_after_opening_is_a_clear_error(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a.safetensors", seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    src = SafetensorsSource(b)
    last = list(src.entries)[-1]
    os.truncate(b, b.stat().st_size - 10)
    with pytest.raises(CorruptFile, match="truncated"):
        src.get(last)
    src.close()
    out = tmp_path / "m.safetensors"
    with pytest.raises(SdcloudError):
        merge_checkpoints(MergeOptions(a=a, b=b, output=out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


def test_pread_fallback_reads_the_same_tensors(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "a.safetensors", seed=4)
    mapped, plain = SafetensorsSource(path), SafetensorsSource(path)
    plain._mappable = False  # what a filesystem that cannot be memory-mapped gets
    for key in mapped.entries:
        assert torch.equal(mapped.get(key), plain.get(key)), key


def test_fp16_weighted_sum_is_computed_in_fp32_and_rounded_once(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a.safetensors", seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=a, b=b, output=out, alpha=0.3, dtype="fp16", device="cpu"))
    fa, fb, got = load_file(str(a)), load_file(str(b)), load_file(str(out))
    merged = [k for k in got if k.startswith("model.diffusion_model.")]
    assert len(merged) > 100
    for k in merged:
        want = torch.lerp(fa[k].float(), fb[k].float(), 0.3).half()
        assert got[k].dtype == torch.float16 and torch.equal(got[k], want), k


def test_a_filesystem_refusing_o_direct_gets_the_same_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FUSE mounts such as Google Drive refuse O_DIRECT with EINVAL, at open or at the first
    write. No such filesystem can be mounted here, so ``os.open``/``os.write`` are patched to
    refuse it the way the kernel does; the merge must fall back and write the same bytes."""
    a = write_synthetic(tmp_path / "a.safetensors", seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    ref = tmp_path / "ref.safetensors"
    merge_checkpoints(MergeOptions(a=a, b=b, output=ref, alpha=0.3))
    real_open, real_write = os.open, os.write
    direct_fds: set[int] = set()

    def refuse_at_write(path, flags, mode=0o777, **kw):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode, **kw)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def write(fd, data):  # type: ignore[no-untyped-def]
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", refuse_at_write)
    monkeypatch.setattr(os, "write", write)
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=a, b=b, output=out, alpha=0.3))
    assert direct_fds, "the merge did not try O_DIRECT"
    assert out.read_bytes() == ref.read_bytes()

    def refuse_at_open(path, flags, mode=0o777, **kw):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refuse_at_open)
    out2 = tmp_path / "m2.safetensors"
    merge_checkpoints(MergeOptions(a=a, b=b, output=out2, alpha=0.3))
    assert out2.read_bytes() == ref.read_bytes()
