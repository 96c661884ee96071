"""Read and validate a ``.safetensors`` header without torch and without reading tensor data.

Layout: 8-byte little-endian u64 ``N``, ``N`` bytes of JSON (``dtype``, ``shape``,
``data_offsets`` per tensor, optional ``__metadata__``), then the raw data.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from sdcloud.errors import CorruptFile

MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    data_start: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: t.shape for k, t in self.tensors.items()}


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check a safetensors header; raise ``CorruptFile`` with the reason if it lies."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CorruptFile(f"{path.name}: too short to be a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CorruptFile(f"{path.name}: header length {n} is impossible for a {size}-byte file"
                              " (truncated or not a safetensors file)")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptFile(f"{path.name}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{path.name}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CorruptFile(f"{path.name}: header entry for '{name}' is malformed") from None
        if dtype not in DTYPE_SIZES:
            raise CorruptFile(f"{path.name}: tensor '{name}' has unknown dtype {dtype!r}")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * DTYPE_SIZES[dtype] or begin < 0:
            raise CorruptFile(f"{path.name}: tensor '{name}' offsets do not match its shape and dtype")
        if data_start + end > size:
            raise CorruptFile(f"{path.name}: tensor '{name}' lies past the end of the file (truncated?)")
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, data_start + end)
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise CorruptFile(f"{path.name}: tensor '{name}' overlaps another or leaves a gap in the data")
        pos = end
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptFile(f"{path.name}: __metadata__ must map strings to strings")
    return SafetensorsHeader(path, data_start, tensors, dict(metadata))
