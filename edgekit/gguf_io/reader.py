"""Reading GGUF files safely: validate before use, and pull out tokenizer facts."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

GGUF_MAGIC = b"GGUF"


_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
_STRING, _ARRAY = 8, 9


def scan(path: Path) -> dict:
    """Walk a GGUF file's header and tensor table without decoding values; check that every
    tensor's data lies inside the file. Cheap even for a 150k-token vocabulary."""
    import mmap
    import struct

    from edgekit.gguf_io import ggml_types

    path = Path(path)
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
            alignment = 32

            def need(n):
                if pos + n > size:
                    raise EdgekitError(f"{path}: truncated GGUF (header ends past the end of the file)")

            def string():
                nonlocal pos
                need(8)
                (n,) = struct.unpack_from("<Q", mm, pos)
                need(8 + n)
                out = bytes(mm[pos + 8 : pos + 8 + n])
                pos += 8 + n
                return out

            def skip_value(vtype):
                nonlocal pos
                if vtype in _FIXED:
                    need(_FIXED[vtype])
                    pos += _FIXED[vtype]
                elif vtype == _STRING:
                    string()
                elif vtype == _ARRAY:
                    need(12)
                    itype, count = struct.unpack_from("<IQ", mm, pos)
                    pos += 12
                    if itype in _FIXED:
                        need(count * _FIXED[itype])
                        pos += count * _FIXED[itype]
                    else:
                        for _ in range(count):
                            skip_value(itype)
                else:
                    raise EdgekitError(f"{path}: corrupt GGUF (unknown value type {vtype})")

            for _ in range(n_kv):
                key = string()
                need(4)
                (vtype,) = struct.unpack_from("<I", mm, pos)
                pos += 4
                if key == b"general.alignment" and vtype == 4:
                    need(4)
                    (alignment,) = struct.unpack_from("<I", mm, pos)
                skip_value(vtype)
            tensors = []
            for _ in range(n_tensors):
                name = string().decode("utf-8", "replace")
                need(4)
                (n_dims,) = struct.unpack_from("<I", mm, pos)
                need(4 + 8 * n_dims + 12)
                dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
                ttype, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                gt = ggml_types.BY_ID.get(ttype)
                if gt is None or not dims:
                    raise EdgekitError(f"{path}: corrupt GGUF (tensor {name} has type {ttype}, dims {dims})")
                tensors.append(
                    (name, tuple(dims), gt.name, offset, ggml_types.tensor_nbytes(tuple(dims), gt.name))
                )
            data_start = -(-pos // alignment) * alignment
            for name, _dims, _t, offset, nbytes in tensors:
                if data_start + offset + nbytes > size:
                    raise EdgekitError(
                        f"{path}: truncated GGUF (tensor {name} ends past the end of the file)"
                    )
            return {"version": version, "n_kv": n_kv, "tensors": tensors, "data_start": data_start}
        finally:
            mm.close()


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
