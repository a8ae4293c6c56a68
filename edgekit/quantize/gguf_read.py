"""Reading GGUF files safely: validate before use, and pull out tokenizer facts."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

GGUF_MAGIC = b"GGUF"


def open_reader(path: Path):
    """A gguf.GGUFReader over a file that has been checked to be whole."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise EdgekitError(f"{path}: cannot read ({e.strerror})") from None
    if head[:4] != GGUF_MAGIC:
        raise EdgekitError(f"{path}: not a GGUF file (bad magic {head[:4]!r})")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise EdgekitError(f"{path}: unsupported GGUF version {version}")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:
        raise EdgekitError(f"{path}: corrupt or truncated GGUF ({type(e).__name__}: {str(e)[:80]})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise EdgekitError(f"{path}: truncated GGUF (tensor {t.name} ends at byte {end}, file has {size})")
    return reader


def check_gguf(path: Path) -> None:
    open_reader(path)


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
