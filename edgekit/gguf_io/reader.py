"""Reading GGUF files safely: validate before use, and pull out tokenizer facts.

`read_header` walks the header, the metadata and the tensor table with `struct` over an
mmap (no numpy, no gguf package, no tensor data read) and checks that every tensor's data
lies inside the file; `scan` is its summary for callers that need only the tensor table.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgekit.errors import EdgekitError

GGUF_MAGIC = b"GGUF"


_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
_FORMAT = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_NESTING = 8  # arrays of arrays: llama.cpp writes none; a bound keeps a crafted file from recursing


# general.file_type (llama.cpp's llama_ftype) by value; "-" for values llama.cpp retired
_FILE_TYPES = (
    "F32 F16 Q4_0 Q4_1 - - - Q8_0 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M "
    "Q6_K IQ2_XXS IQ2_XS Q2_K_S IQ3_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ3_M IQ2_S IQ2_M IQ4_XS IQ1_M BF16 "
    "- - - TQ1_0 TQ2_0 MXFP4_MOE NVFP4 Q1_0"
).split()


def file_type_name(value: int) -> str | None:
    """The name of a general.file_type value (15: Q4_K_M), or None for an unknown one."""
    if 0 <= value < len(_FILE_TYPES) and _FILE_TYPES[value] != "-":
        return _FILE_TYPES[value]
    return None


class TensorInfo(NamedTuple):
    """One row of the tensor table; dims in GGUF order (dims[0] is the row length)."""

    name: str
    dims: tuple[int, ...]
    type: str  # ggml type name (F32, Q4_K, ...)
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GGUFArray:
    """An array value left undecoded: its element type and length (a 150k-token vocabulary
    is counted, not decoded)."""

    itype: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    size: int  # bytes of the file
    metadata: dict[str, Any]  # scalars and strings decoded; arrays as GGUFArray unless asked for
    tensors: list[TensorInfo]
    data_start: int

    @property
    def n_kv(self) -> int:
        return len(self.metadata)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: t.dims for t in self.tensors}


def read_header(path: Path, arrays: Collection[str] | Callable[[str], bool] = ()) -> GGUFHeader:
    """The header, every metadata value (arrays decoded only for the keys in `arrays`, or
    those it is true of when it is a function) and
    the tensor table of a GGUF file, checked to be whole: a file that is not GGUF, is
    truncated or is corrupt raises a one-line EdgekitError. Reads no tensor data."""
    import mmap
    import struct

    from edgekit.gguf_io import ggml_types

    path = Path(path)
    decode = arrays if callable(arrays) else arrays.__contains__
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise EdgekitError(f"{path}: cannot read ({e.strerror})") from None
    with fh:
        size = path.stat().st_size
        if size < 24:
            raise EdgekitError(f"{path}: not a GGUF file (only {size} bytes)")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if mm[:4] != GGUF_MAGIC:
                raise EdgekitError(f"{path}: not a GGUF file (bad magic {bytes(mm[:4])!r})")
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
            if version not in (2, 3):
                raise EdgekitError(f"{path}: unsupported GGUF version {version}")
            pos = 24

            def need(n: int) -> None:
                if pos + n > size:
                    raise EdgekitError(f"{path}: truncated GGUF (header ends past the end of the file)")

            def string() -> bytes:
                nonlocal pos
                need(8)
                (n,) = struct.unpack_from("<Q", mm, pos)
                need(8 + n)
                out = bytes(mm[pos + 8 : pos + 8 + n])
                pos += 8 + n
                return out

            def value(vtype: int, keep: bool, depth: int = 0) -> Any:
                nonlocal pos
                if vtype in _FIXED:
                    need(_FIXED[vtype])
                    v = struct.unpack_from(_FORMAT[vtype], mm, pos)[0]
                    pos += _FIXED[vtype]
                    return v
                if vtype == _STRING:
                    return string().decode("utf-8", "replace")
                if vtype == _ARRAY:
                    if depth >= _MAX_NESTING:
                        raise EdgekitError(f"{path}: corrupt GGUF (arrays nested over {_MAX_NESTING} deep)")
                    need(12)
                    itype, count = struct.unpack_from("<IQ", mm, pos)
                    pos += 12
                    if itype in _FIXED:
                        need(count * _FIXED[itype])
                        if keep:
                            fmt = f"<{count}{_FORMAT[itype][1]}"
                            items = list(struct.unpack_from(fmt, mm, pos))
                            pos += count * _FIXED[itype]
                            return items
                        pos += count * _FIXED[itype]
                        return GGUFArray(itype, count)
                    if itype not in (_STRING, _ARRAY):
                        raise EdgekitError(f"{path}: corrupt GGUF (unknown value type {itype})")
                    if keep:
                        return [value(itype, True, depth + 1) for _ in range(count)]
                    for _ in range(count):
                        skip(itype, depth + 1)
                    return GGUFArray(itype, count)
                raise EdgekitError(f"{path}: corrupt GGUF (unknown value type {vtype})")

            def skip(vtype: int, depth: int) -> None:
                nonlocal pos
                if vtype == _STRING:  # the common case (vocabularies, merges): no decoding
                    need(8)
                    (n,) = struct.unpack_from("<Q", mm, pos)
                    need(8 + n)
                    pos += 8 + n
                else:
                    value(vtype, False, depth)

            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = string().decode("utf-8", "replace")
                need(4)
                (vtype,) = struct.unpack_from("<I", mm, pos)
                pos += 4
                metadata[key] = value(vtype, vtype == _ARRAY and decode(key))
            alignment = metadata.get("general.alignment", 32)
            if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
                raise EdgekitError(f"{path}: corrupt GGUF (general.alignment is {alignment!r})")
            tensors: list[TensorInfo] = []
            for _ in range(n_tensors):
                name = string().decode("utf-8", "replace")
                need(4)
                (n_dims,) = struct.unpack_from("<I", mm, pos)
                need(4 + 8 * n_dims + 12)
                dims = tuple(int(d) for d in struct.unpack_from(f"<{n_dims}Q", mm, pos + 4))
                ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                gt = ggml_types.BY_ID.get(ttype)
                if gt is None or not dims or not dims[0]:
                    raise EdgekitError(f"{path}: corrupt GGUF (tensor {name} has type {ttype}, dims {dims})")
                tensors.append(
                    TensorInfo(name, dims, gt.name, offset, ggml_types.tensor_nbytes(dims, gt.name))
                )
            data_start = -(-pos // alignment) * alignment
            for t in tensors:
                if data_start + t.offset + t.nbytes > size:
                    raise EdgekitError(
                        f"{path}: truncated GGUF (tensor {t.name} ends past the end of the file)"
                    )
            return GGUFHeader(path, version, size, metadata, tensors, data_start)
        finally:
            mm.close()


def scan(path: Path) -> dict:
    """Walk a GGUF file's header and tensor table without decoding arrays; check that every
    tensor's data lies inside the file. Cheap even for a 150k-token vocabulary."""
    h = read_header(path)
    return {"version": h.version, "n_kv": h.n_kv, "tensors": h.tensors, "data_start": h.data_start}


def check_gguf(path: Path) -> None:
    scan(path)


def open_reader(path: Path):
    """A gguf.GGUFReader over a file that has been checked to be whole."""
    scan(path)
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:
        raise EdgekitError(f"{path}: corrupt GGUF ({type(e).__name__}: {str(e)[:80]})") from None


def field_value(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:
        return None


def gguf_tokenizer_facts(path: Path) -> dict:
    r = open_reader(path)
    facts = {"model": field_value(r, "tokenizer.ggml.model"), "pre": field_value(r, "tokenizer.ggml.pre")}
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        v = field_value(r, f"tokenizer.ggml.{key}_token_id")
        if v is not None:
            facts[f"{role}_token_id"] = int(v)
    return facts
