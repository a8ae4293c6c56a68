"""Lazy, validated access to the tensors of safetensors files, one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header mapping names to dtype,
shape and byte offsets into the data section, then the data. We read the header, check
every entry against the file size, and read each tensor only when asked, so converting a
model holds one tensor in memory rather than the model. numpy has no bfloat16: BF16 is
widened to float32 exactly (shift into the high half of a 32-bit word).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

_DTYPES = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("u1", 1),
    "F8_E4M3": ("u1", 1),
    "F8_E5M2": ("u1", 1),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


class SafetensorsCheckpoint:
    def __init__(self, files: list[Path]):
        self.entries: dict[str, TensorEntry] = {}
        for f in files:
            for e in read_header(f):
                if e.name in self.entries:
                    raise EdgekitError(
                        f"{f}: tensor {e.name} also appears in {self.entries[e.name].file.name}"
                    )
                self.entries[e.name] = e
        self._fds: dict[Path, int] = {}

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def load_f32(self, name: str):
        """The tensor as a float32 numpy array (a fresh copy)."""
        e = self.entries[name]
        rows = e.shape[0] if e.shape else 1
        return self.rows_f32(name, 0, rows).reshape(e.shape)

    def rows_f32(self, name: str, r0: int, r1: int):
        """Rows r0..r1 of the tensor (along its first dimension) as float32, flattened per row."""
        import numpy as np

        e = self.entries[name]
        if e.dtype in ("F8_E4M3", "F8_E5M2", "BOOL"):
            raise EdgekitError(
                f"{e.file}: tensor {name} is {e.dtype}; edgekit converts from F32/F16/BF16 checkpoints"
            )
        rows = e.shape[0] if e.shape else 1
        row_bytes = e.nbytes // rows if rows else 0
        # pread into private memory rather than mmap: a mapped file counts its touched pages
        # in the process's RSS, and we want to hold a slice of one tensor, not the model
        buf = os.pread(self._fd(e.file), (r1 - r0) * row_bytes, e.start + r0 * row_bytes)
        if len(buf) != (r1 - r0) * row_bytes:
            raise EdgekitError(f"{e.file}: truncated while reading tensor {name}")
        np_dtype, _ = _DTYPES[e.dtype]
        raw = np.frombuffer(buf, dtype=np_dtype)
        if e.dtype == "BF16":
            out = raw.astype(np.uint32)
            del raw, buf
            out <<= 16
            out = out.view(np.float32)
        else:
            out = raw.astype(np.float32)
        return out.reshape(r1 - r0, -1)

    def _fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def read_header(path: Path) -> list[TensorEntry]:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise EdgekitError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER or 8 + n > size:
                raise EdgekitError(f"{path}: corrupt safetensors header (length {n}, file size {size})")
            raw = fh.read(n)
    except OSError as e:
        raise EdgekitError(f"{path}: cannot read ({e.strerror})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgekitError(f"{path}: corrupt safetensors header ({type(e).__name__})") from None
    data_start = 8 + n
    out = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = spec["dtype"], tuple(spec["shape"]), spec["data_offsets"]
            if not all(_is_index(x) for x in (*shape, a, b)) or not isinstance(dtype, str):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise EdgekitError(f"{path}: corrupt safetensors entry for {name}") from None
        if dtype not in _DTYPES:
            raise EdgekitError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        count = 1
        for d in shape:
            count *= d
        if b - a != count * _DTYPES[dtype][1] or a > b:
            raise EdgekitError(
                f"{path}: tensor {name}: {b - a} bytes do not hold shape {list(shape)} of {dtype}"
            )
        if data_start + b > size:
            raise EdgekitError(
                f"{path}: truncated safetensors file (tensor {name} ends past the end of the file)"
            )
        out.append(TensorEntry(name, path, dtype, shape, data_start + a, b - a))
    # tensors share no bytes: each one's data is its own (a header may not alias two names)
    spans = sorted((e.start, e.start + e.nbytes, e.name) for e in out if e.nbytes)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise EdgekitError(f"{path}: corrupt safetensors header (tensors {first} and {second} overlap)")
    return out


def _is_index(x: object) -> bool:
    # a JSON integer >= 0 (bool is an int to Python, never to the format)
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
