"""Tensor-at-a-time reading and writing of checkpoints (reference/checkpoints.md §6).

Readers hand out one tensor per call (a copy-on-write map of the tensor's pages behind a
validated safetensors header, or a lazily mapped tensor from a safe ``.ckpt`` load).
``StreamWriter`` computes the whole output header first, then takes the tensors in that order
and writes each straight to disk (``sink.py``: ``O_DIRECT`` where possible) from a background
thread while another hashes the bytes, so the caller can compute the next tensor in the
meantime; computed tensors live in a reusable ring (``arena.py``). The file is written under
a temporary name, fsync'd and renamed only when every tensor is in: an error or interrupt
leaves nothing under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import queue
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from sdcloud.checkpoints.arena import Arena, Span
from sdcloud.checkpoints.detect import normalise_key
from sdcloud.checkpoints.hashing import FileHashes
from sdcloud.checkpoints.safetensors_header import DTYPE_SIZES, read_header
from sdcloud.checkpoints.sink import Sink, open_sink
from sdcloud.durable import fsync_dir
from sdcloud.errors import BadRequest, CorruptFile, SdcloudError, Unsupported

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]
T = TypeVar("T")

_TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32",
    "U64": "uint64",
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
OUTPUT_DTYPES = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ARENA_BYTES = 128 << 20  # reusable memory for tensors queued to the writer (arena.py)
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+


def torch_dtype(st_dtype: str) -> torch.dtype:
    import torch

    return getattr(torch, _TORCH_NAMES[st_dtype])


def st_dtype(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    for key, value in _TORCH_NAMES.items():
        if value == name:
            return key
    raise Unsupported(f"tensor dtype {name} cannot be stored in safetensors by sdcloud")


def output_dtype(name: str | None) -> str | None:
    """``fp16|bf16|fp32`` (or None = keep each tensor's dtype) to a safetensors dtype."""
    if name is None:
        return None
    try:
        return OUTPUT_DTYPES[name.lower()]
    except KeyError:
        raise SdcloudError(f"unknown output dtype {name!r}; use one of {', '.join(OUTPUT_DTYPES)}") from None


@dataclass(frozen=True)
class Entry:
    """One tensor of a checkpoint as seen without reading it."""

    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.dtype]
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


class TensorSource(Protocol):
    """A checkpoint whose tensors can be fetched one by one."""

    path: Path
    entries: dict[str, Entry]  # in storage order
    metadata: dict[str, str]

    def get(self, name: str) -> torch.Tensor: ...

    def close(self) -> None: ...


class SafetensorsSource:
    """One tensor at a time from a header-validated safetensors file.

    Each tensor is its own copy-on-write memory map of the file's pages, populated by the
    caller's thread (the read-ahead thread): no copy out of the page cache, and the map is
    released when the last view of the tensor goes, so the resident set stays the tensors
    in use. A write into a returned tensor makes a private copy, never touches the file.
    Where the file cannot be mapped (some network mounts), ``pread`` into a fresh buffer.
    """

    def __init__(self, path: str | Path) -> None:
        header = read_header(path)
        self.path = header.path
        self.metadata = header.metadata
        infos = sorted(header.tensors.values(), key=lambda t: t.start)
        names = _unique_names([t.name for t in infos], self.path)
        self._spans = {n: (t.start, t.nbytes) for n, t in zip(names, infos, strict=True)}
        self.entries = {n: Entry(n, t.dtype, t.shape) for n, t in zip(names, infos, strict=True)}
        self._fd = os.open(self.path, os.O_RDONLY)
        self._mappable = True

    def get(self, name: str) -> torch.Tensor:
        start, nbytes = self._spans[name]
        entry = self.entries[name]
        buf = self._map(name, start, nbytes) if self._mappable and nbytes else None
        if buf is None:
            buf = self._pread(name, start, nbytes)
        return buf.view(torch_dtype(entry.dtype)).reshape(entry.shape)

    def _map(self, name: str, start: int, nbytes: int) -> torch.Tensor | None:
        import torch

        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            region = mmap.mmap(self._fd, nbytes + start - base, access=mmap.ACCESS_COPY, offset=base)
        except ValueError:  # mmap checks the length against the file's current size
            raise CorruptFile(f"{self.path.name}: file ended inside tensor '{name}' (truncated?)") from None
        except OSError:
            self._mappable = False
            return None
        if not sys.platform.startswith("linux"):
            return torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=start - base)
        # Read once: no "recently used" mark when unmapped, so these pages are the first the
        # kernel evicts for the output's (as with read()), and a bigger read-ahead.
        region.madvise(mmap.MADV_SEQUENTIAL)
        try:
            region.madvise(_MADV_POPULATE_READ)  # fault every page in now, in this thread
        except OSError as err:
            if err.errno == errno.EFAULT:  # the pages are gone: the file shrank under us
                region.close()
                raise CorruptFile(f"{self.path.name}: file ended inside tensor '{name}' (truncated?)") from None
            region.madvise(mmap.MADV_WILLNEED)  # kernel before 5.14: start the read at least
        return torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=start - base)

    def _pread(self, name: str, start: int, nbytes: int) -> torch.Tensor:
        import torch

        buf = torch.empty(nbytes, dtype=torch.uint8)  # not zero-filled, unlike bytearray
        view = memoryview(buf.numpy())
        got = 0
        while got < nbytes:
            try:
                n = os.preadv(self._fd, [view[got:]], start + got)
            except OSError as err:  # e.g. a network mount that dropped
                raise SdcloudError(f"cannot read {self.path}: {err.strerror or err}") from None
            if n <= 0:
                raise CorruptFile(f"{self.path.name}: file ended inside tensor '{name}' (truncated?)")
            got += n
        return buf

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # live maps keep their pages; the fd is not needed for them
            self._fd = -1


class PickleSource:
    """Tensors of a ``.ckpt``/``.pt``/``.bin`` loaded with the safe, memory-mapped loader."""

    def __init__(self, path: str | Path) -> None:
        from sdcloud.checkpoints.pickle_safe import load_ckpt_state_dict

        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        raw = load_ckpt_state_dict(self.path)
        self._tensors = dict(zip(_unique_names(list(raw), self.path), raw.values(), strict=True))
        self.entries = {k: Entry(k, st_dtype(t.dtype), tuple(t.shape)) for k, t in self._tensors.items()}

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def close(self) -> None:
        self._tensors = {}


def _unique_names(names: list[str], path: Path) -> list[str]:
    """Keys in the standard layout (A1111 renames the same on load): ``state_dict.`` unwrapped,
    NAI-style CLIP keys given ``text_model.``; refuse a file where two keys collide that way."""
    out = [normalise_key(n) for n in names]
    if len(set(out)) != len(out):
        raise CorruptFile(f"{path.name}: holds the same tensor under both old and new CLIP key names")
    return out


def open_source(path: str | Path) -> TensorSource:
    """Open a checkpoint for streaming by its suffix; raise a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SdcloudError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return SafetensorsSource(path)
    if suffix in PICKLE_SUFFIXES:
        return PickleSource(path)
    raise Unsupported(f"{path.name}: unknown checkpoint type '{suffix}'; expected .safetensors, .ckpt, "
                      ".pt, .pth or .bin")


def prefetch(jobs: Iterable[Callable[[], T]]) -> Iterator[T]:
    """Run each job one step ahead in a helper thread: the next tensor is read while the
    caller computes on the current one (pread and torch ops release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-read") as pool:
        pending: Future[T] | None = None
        for job in jobs:
            nxt = pool.submit(job)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()


@contextmanager
def single_intraop_thread(device: str | torch.device = "cpu") -> Iterator[None]:
    """Run CPU tensor math on one torch thread while streaming, then restore the setting.

    The per-tensor math is memory-bound and the read-ahead and writer threads already keep
    the cores busy; OpenMP's spinning workers only contend with them (a 0.4 GB SDXL-shaped
    merge on a loaded 2-core machine: 60 s with 2 threads, 11 s with 1).
    """
    import torch

    if str(device).startswith("cuda"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _temp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.partial")


class StreamWriter:
    """Write a safetensors file whose header is fixed before the first tensor.

    Usage::

        with StreamWriter(dest, entries, metadata) as w:
            for e in entries:
                out = w.buffer(e)  # optional: reusable memory for a computed tensor
                ...                # fill ``out``
                w.write(e.name, out)
        hashes = w.hashes  # full-file sha256 and AutoV1, computed while writing

    Two helper threads take the queued tensors in order: one writes them, the other hashes
    them, so neither the caller's compute nor the disk waits for sha256. Tensors made with
    :meth:`buffer` live in the writer's :class:`~sdcloud.checkpoints.arena.Arena` and are
    reused once both threads are done with them. The data-only
    (addnet) hash is left out: it only names LoRA files, and a second sha256 pass would
    cost as much CPU as the merge math.
    """

    def __init__(self, dest: str | Path, entries: Iterable[Entry], metadata: Mapping[str, str] | None = None,
                 progress: Progress | None = None, direct: bool = True) -> None:
        self.dest = Path(dest)
        self.direct = direct  # O_DIRECT where the filesystem takes it (sink.py)
        self.entries = list(entries)
        self._progress = progress
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for e in self.entries:
            header[e.name] = {"dtype": e.dtype, "shape": list(e.shape),
                              "data_offsets": [offset, offset + e.nbytes]}
            offset += e.nbytes
        self.total_bytes = offset
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._prefix = struct.pack("<Q", len(raw)) + raw
        self._next = 0
        self._written = 0
        self._tmp = _temp_path(self.dest)
        self._sink: Sink | None = None
        self._closed = False
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=4), queue.Queue(maxsize=4)]
        self._arena = Arena(ARENA_BYTES)
        self._spans: dict[int, Span] = {}
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._sha = hashlib.sha256()
        self._v1 = hashlib.sha256()
        self._pos = 0
        self.hashes: FileHashes | None = None

    def __enter__(self) -> StreamWriter:
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._sink = open_sink(self._tmp, self.direct)
            self._sink.write(self._prefix)
        except OSError as err:
            if self._sink is not None:
                self._sink.close()
            self._tmp.unlink(missing_ok=True)
            raise self._io_error(err) from None
        self._hash(self._prefix)
        for q, work in zip(self._queues, (self._write, self._hash), strict=True):
            t = threading.Thread(target=self._drain, args=(q, work), name="ckpt-write", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def buffer(self, entry: Entry) -> torch.Tensor:
        """An uninitialised tensor for ``entry`` in reusable memory, freed once written
        (large ones get ordinary memory). Waits while earlier tensors are still queued."""
        import torch

        taken = self._arena.take(entry.nbytes)
        if taken is None:
            return torch.empty(entry.shape, dtype=torch_dtype(entry.dtype))
        raw, span = taken
        tensor = raw.view(torch_dtype(entry.dtype)).reshape(entry.shape)
        self._spans[tensor.data_ptr()] = span
        return tensor

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Queue the next tensor (in the header order and shape; cast to the planned dtype)."""
        if self._error is not None:
            raise self._error
        if self._next >= len(self.entries):
            raise SdcloudError(f"internal: extra tensor '{name}' written")
        e = self.entries[self._next]
        if name != e.name or tuple(tensor.shape) != e.shape:
            raise SdcloudError(f"internal: tensor '{name}' {tuple(tensor.shape)} does not match planned "
                               f"'{e.name}' {e.shape}")
        if st_dtype(tensor.dtype) != e.dtype:  # cast into the ring, not into fresh memory
            tensor = self.buffer(e).copy_(tensor)
        self._next += 1
        span = self._spans.pop(tensor.data_ptr(), None) if tensor.numel() else None
        item = (_as_bytes(tensor), _Countdown(len(self._queues), self._arena, span) if span else None)
        for q in self._queues:
            q.put(item)

    def _drain(self, q: queue.Queue, work: Callable[[memoryview], None]) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            data, countdown = item
            try:
                if self._error is None:  # else keep draining so write() never blocks
                    work(data)
            except BaseException as err:  # reported by the next write() or on exit
                self._error = err
            finally:
                if countdown is not None:
                    countdown.done()

    def _write(self, data: memoryview) -> None:
        assert self._sink is not None
        try:
            self._sink.write(data)
        except OSError as err:
            raise self._io_error(err) from None
        self._written += len(data)
        if self._progress:
            self._progress(self._written, self.total_bytes)

    def _hash(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        end = self._pos + len(data)
        lo, hi = max(self._pos, 0x100000), min(end, 0x110000)
        if lo < hi:
            self._v1.update(data[lo - self._pos:hi - self._pos])
        self._pos = end

    def __exit__(self, exc_type, exc, tb) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        assert self._sink is not None
        try:
            if exc_type is None and self._error is None and self._next != len(self.entries):
                self._error = SdcloudError(
                    f"internal: only {self._next} of {len(self.entries)} tensors written")
            if exc_type is None and self._error is None:
                self._closed = True
                try:
                    self._sink.finish()
                    os.replace(self._tmp, self.dest)
                    fsync_dir(self.dest.parent)
                except OSError as err:
                    raise self._io_error(err) from None
                self.hashes = FileHashes(
                    sha256=self._sha.hexdigest(),
                    autov1=self._v1.hexdigest()[:8] if self._pos >= 0x100000 else "NOFILE",
                    addnet=None,
                )
                return
        finally:
            if not self._closed:
                self._sink.close()
            if self._tmp.exists():
                self._tmp.unlink()
        if exc_type is None and self._error is not None:
            raise self._error


    def _io_error(self, err: OSError) -> SdcloudError:
        """One line for a failed write: a full disk says how much room the file needs."""
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", 122)):
            return SdcloudError(f"no space left for {self.dest.name} in {self.dest.parent} (it needs "
                                f"{(len(self._prefix) + self.total_bytes) / 1e9:.2f} GB); free some space "
                                "or choose another folder. Nothing was written")
        return SdcloudError(f"cannot write {self.dest}: {err.strerror or err}. Nothing was written")


class _Countdown:
    """Frees an arena span once every helper thread is done with its tensor."""

    def __init__(self, users: int, arena: Arena, span: Span) -> None:
        self._left, self._arena, self._span = users, arena, span
        self._lock = threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._arena.release(self._span)


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes on the CPU, C-ordered, without another copy when already so."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


@dataclass(frozen=True)
class CopyStep:
    """One output tensor: taken from ``source_key`` (None: CLIP ids rebuilt as ``arange``)."""

    entry: Entry
    source_key: str | None


def rewrite(source: TensorSource, dest: Path, steps: list[CopyStep], metadata: Mapping[str, str],
            progress: Progress | None = None,
            transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> FileHashes:
    """Stream ``source`` into a new safetensors file following ``steps`` (cast to each entry's
    dtype; ``transform(key, fp32_tensor)`` may change float tensors on the way)."""
    import torch

    def job(step: CopyStep) -> Callable[[], tuple[CopyStep, torch.Tensor | None]]:
        return lambda: (step, source.get(step.source_key) if step.source_key is not None else None)

    with torch.inference_mode(), single_intraop_thread(), \
            StreamWriter(dest, [s.entry for s in steps], metadata, progress) as w:
        for step, tensor in prefetch(job(s) for s in steps):
            if tensor is None:
                n = step.entry.shape[-1] if step.entry.shape else 77
                tensor = torch.arange(n, dtype=torch.int64).reshape(step.entry.shape)
            elif transform is not None and tensor.is_floating_point():
                tensor = transform(step.entry.name, tensor)
            w.write(step.entry.name, tensor)
    assert w.hashes is not None
    return w.hashes


def check_output(dest: Path, inputs: Iterable[Path | None], overwrite: bool) -> None:
    """Refuse an output that is not safetensors, would replace an input, or exists already."""
    if dest.suffix.lower() != ".safetensors":
        raise BadRequest(f"output must be a .safetensors file, not '{dest.name}'")
    if dest.resolve() in {p.resolve() for p in inputs if p is not None}:
        raise BadRequest("the output would overwrite one of the inputs; choose another name")
    if dest.exists() and not overwrite:
        raise BadRequest(f"{dest} already exists; choose another name or pass --overwrite")
