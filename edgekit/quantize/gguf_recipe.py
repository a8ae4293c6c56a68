"""A mixed GGUF's recipe, as llama.cpp users reproduce it.

The recipe is the type of every quantized tensor, saved as a `llama-quantize
--tensor-type-file`: one `PATTERN=TYPE` per line, the pattern an anchored regular expression of
the tensor's exact name (`^blk\\.3\\.ffn_down\\.weight$=q6_K`). llama-quantize reads the file
word by word (whitespace separates entries, so the file has no comments), lower-cases the
patterns, and gives each quantizable tensor the type of the first pattern its name matches,
before the row-length fallback; the recipe lists the type each tensor ends with (after that
fallback), so the fallback changes nothing.

`relayout` writes a GGUF that edgekit's one-pass converter made with the recipe's types exactly
as `llama-quantize --tensor-type-file RECIPE --imatrix IMATRIX SOURCE.gguf OUT.gguf BASE`
writes it from the model's unquantized GGUF (edgekit's F32/BF16 reference), so the two files
are byte-identical (tests/quantize/test_gguf_recipe.py). What llama-quantize does differently
from edgekit's converter, all of it metadata and order:

- it copies the source's key/value pairs in order and then *sets* general.quantization_version
  and general.file_type, which (gguf_set_val_*) removes a key and appends it: both move to the
  end, quantization_version first;
- with an importance matrix it appends quantize.imatrix.file (the path as given on its
  command line, at most 127 bytes), quantize.imatrix.dataset (the file's first dataset),
  quantize.imatrix.entries_count and, when the file counts chunks, quantize.imatrix.chunks_count
  (uint32);
- its tensors are in the loader's order: tensors outside blocks by name, then block by block
  (by number), each by name; each tensor's data is padded to the file's alignment (32).

The tensor bytes themselves are the same: both run ggml's quantizers on the same float32 rows.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types

RECIPE_SUFFIX = ".tensor-types.txt"
_GGUF_UINT32 = 4
_GGUF_STRING = 8
_KV_STR_MAX = 127  # llama_model_kv_override.val_str holds 128 bytes with the terminator
_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_PATTERN = re.compile(r"\^((?:[a-z0-9_]|\\\.)+)\$")


def ggml_name(ty: str) -> str:
    """ggml's own spelling of a type (ggml_type_name): q4_K, q8_0, f16."""
    ty = ty.upper()
    return ty[:-2].lower() + "_K" if ty.endswith("_K") else ty.lower()


def pattern_of(name: str) -> str:
    """The anchored regular expression that matches exactly this tensor name."""
    if not re.fullmatch(r"[a-z0-9_.]+", name):
        raise EdgekitError(f"tensor name {name!r} cannot be written in a --tensor-type-file")
    return "^" + name.replace(".", "\\.") + "$"


def recipe_text(types: Mapping[str, str]) -> str:
    """The --tensor-type-file of `types` (quantized tensors only: F32 tensors are not listed,
    llama-quantize leaves them as they are), in llama.cpp's processing order."""
    names = sorted((n for n, t in types.items() if t.upper() != "F32"), key=_loader_key)
    return "".join(f"{pattern_of(n)}={ggml_name(types[n])}\n" for n in names)


def write_recipe(path: Path, types: Mapping[str, str]) -> None:
    from edgekit.atomic import write_text

    write_text(path, recipe_text(types))


def read_recipe(path: Path) -> dict[str, str]:
    """tensor name -> TYPE of a recipe edgekit wrote (anchored exact names only)."""
    try:
        words = Path(path).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekitError(f"cannot read the recipe {path}: {e}") from None
    out: dict[str, str] = {}
    for w in words:
        pat, sep, ty = w.partition("=")
        m = _PATTERN.fullmatch(pat)
        if not sep or m is None:
            raise EdgekitError(f"{path}: {w!r} is not an exact-name entry (^name$=type)")
        if ty.upper() not in ggml_types.TYPES:
            raise EdgekitError(f"{path}: unknown ggml type {ty!r} in {w!r}")
        out[m.group(1).replace("\\.", ".")] = ty.upper()
    return out


def overrides(types: Mapping[str, str]) -> list[tuple[str, str]]:
    """The recipe as edgekit's --tensor-type overrides (the same anchored patterns)."""
    return [(pattern_of(n), t.upper()) for n, t in types.items() if t.upper() != "F32"]


def imatrix_kv(imatrix_path: Path, given_as: str) -> list[tuple[str, int | str]]:
    """The quantize.imatrix.* keys llama-quantize writes for `--imatrix given_as` (the file at
    `imatrix_path`)."""
    from edgekit.quantize import imatrix as im

    loaded = im.load(imatrix_path)
    kv: list[tuple[str, int | str]] = [("quantize.imatrix.file", _kv_str(given_as))]
    if loaded.datasets:
        kv.append(("quantize.imatrix.dataset", _kv_str(loaded.datasets[0])))
    kv.append(("quantize.imatrix.entries_count", len(loaded.sums)))
    if loaded.chunk_count > 0:
        kv.append(("quantize.imatrix.chunks_count", loaded.chunk_count))
    return kv


def _kv_str(s: str) -> str:
    raw = s.encode("utf-8")[:_KV_STR_MAX]
    return raw.decode("utf-8", errors="ignore")


def _loader_key(name: str) -> tuple[int, bytes]:
    m = re.match(r"blk\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name.encode())


def relayout(src: Path, dst: Path, file_type: int, extra_kv: Sequence[tuple[str, int | str]] = ()) -> None:
    """Write `src` (a GGUF edgekit's converter wrote) to `dst` as llama-quantize lays it out:
    general.quantization_version and general.file_type (= `file_type`) moved to the end of the
    metadata, then `extra_kv` (uint32 or string), then the tensors in the loader's order."""
    import numpy as np

    from edgekit.atomic import atomic_path
    from edgekit.gguf_io.reader import open_reader

    r = open_reader(src)
    raw = r.data  # the whole file, memory-mapped
    kv_parts: list[bytes] = []
    qv = None
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        if name in ("general.alignment",) and int(f.parts[-1][0]) != _ALIGNMENT:
            raise EdgekitError(f"{src}: alignment {int(f.parts[-1][0])} is not the default")
        if name == "general.quantization_version":
            qv = int(f.parts[-1][0])
            continue
        if name == "general.file_type":
            continue
        kv_parts.append(b"".join(bytes(p.tobytes()) for p in f.parts))
    if qv is None:
        raise EdgekitError(f"{src} has no general.quantization_version (not a quantized GGUF)")
    kv_parts.append(_kv("general.quantization_version", qv))
    kv_parts.append(_kv("general.file_type", file_type))
    kv_parts += [_kv(k, v) for k, v in extra_kv]
    tensors = sorted(r.tensors, key=lambda t: _loader_key(t.name))
    infos: list[bytes] = []
    offset = 0
    for t in tensors:
        dims = [int(d) for d in t.shape]
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()  # ggml_n_dims: trailing size-1 dimensions are not written
        name = t.name.encode()
        info = struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        info += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", int(t.tensor_type), offset)
        infos.append(info)
        offset += _pad(int(t.n_bytes))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv_parts))
    head += b"".join(kv_parts) + b"".join(infos)
    head += b"\0" * (_pad(len(head)) - len(head))
    with atomic_path(dst) as tmp, open(tmp, "wb") as fh:
        fh.write(head)
        for t in tensors:
            start, n = int(t.data_offset), int(t.n_bytes)
            fh.write(np.asarray(raw[start : start + n]).tobytes())
            fh.write(b"\0" * (_pad(n) - n))


def _pad(n: int) -> int:
    return (n + _ALIGNMENT - 1) // _ALIGNMENT * _ALIGNMENT


def _gguf_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, value: int | str) -> bytes:
    if isinstance(value, str):
        return _gguf_str(key) + struct.pack("<I", _GGUF_STRING) + _gguf_str(value)
    return _gguf_str(key) + struct.pack("<II", _GGUF_UINT32, value)
