"""A GGUF file as a model: its architecture from the header, metadata and tensor table.

Nothing but the header is read (no tensor data, no numpy, no gguf package): the file's
`general.architecture` picks the architecture family (`ArchFamily.gguf_file_archs`), which
turns llama.cpp's metadata keys and the tensor names and shapes into an `Arch`
(`ArchFamily.from_gguf_metadata`). `edgekit plan FILE.gguf` and `edgekit models show
FILE.gguf` answer from it in well under a second, whatever the file's size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, EdgekitError
from edgekit.gguf_io.reader import GGUF_MAGIC, GGUFHeader, file_type_name, read_header
from edgekit.models.arch import Arch, GGUFMetadata, find_gguf_family, gguf_names_read


@dataclass(frozen=True)
class GGUFModel:
    """What a GGUF file says about the model in it."""

    path: Path
    arch: Arch
    gguf_arch: str  # llama.cpp's architecture (general.architecture)
    name: str | None  # general.name
    license: str | None  # general.license
    file_type: str | None  # general.file_type's name (Q4_K_M, ...)
    size: int  # bytes
    n_tensors: int
    revision: str  # the file's size, mtime and header digest
    tokenizer: str = ""  # tokenizer.ggml.model (and .pre) in words, with the token count

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.gguf_arch,
            "file_type": self.file_type,
            "size_bytes": self.size,
            "tensors": self.n_tensors,
            "revision": self.revision,
            "tokenizer": self.tokenizer or None,
        }


def is_gguf_path(p: Path) -> bool:
    """A model argument to read as a GGUF file: a file named *.gguf, or any file that starts
    with the GGUF magic."""
    if not p.is_file():
        return False
    if p.suffix.lower() == ".gguf":
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def read_gguf_model(path: str | Path) -> GGUFModel:
    """The architecture and identity of the model in a GGUF file; a file that is not a whole
    GGUF, or one of an architecture edgekit does not read, raises a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"{path}: a directory, not a GGUF file")
    # only the metadata's small arrays are decoded (per-layer head counts, sliding-window
    # patterns), never the vocabulary or the merges
    header = read_header(path, arrays=lambda key: not key.startswith("tokenizer."))
    return GGUFModel(
        path=path,
        arch=arch_from_header(header),
        gguf_arch=str(header.metadata["general.architecture"]),
        name=_str(header.metadata.get("general.name")),
        license=_str(header.metadata.get("general.license")),
        file_type=_file_type(header.metadata.get("general.file_type")),
        size=header.size,
        n_tensors=len(header.tensors),
        revision=_revision(path, header),
        tokenizer=_tokenizer(header.metadata),
    )


def arch_from_gguf(path: str | Path) -> Arch:
    """The `Arch` of the model in a GGUF file, from its metadata and tensor table."""
    return read_gguf_model(path).arch


def arch_from_header(header: GGUFHeader) -> Arch:
    md = header.metadata
    name = md.get("general.architecture")
    if not isinstance(name, str) or not name:
        raise ConfigError(header.path, "general.architecture", "missing (not a model GGUF?)")
    family = find_gguf_family(name)
    if family is None:
        raise EdgekitError(
            f"{header.path}: GGUF architecture '{name}' is not one edgekit reads",
            f"known: {', '.join(gguf_names_read())}",
        )
    m = GGUFMetadata(name, md, header.tensor_shapes(), str(header.path))
    fields = family.from_gguf_metadata(m)
    try:
        return Arch(**fields)
    except TypeError as e:  # a family's hook named a field Arch does not have
        raise EdgekitError(f"{header.path}: {family!r} read an unknown field ({e})") from None


# llama.cpp's tokenizer.ggml.model values (llama-vocab.cpp) in words
_TOKENIZER_KINDS = {
    "gpt2": "byte-level BPE",
    "llama": "SentencePiece",
    "bert": "WordPiece",
    "t5": "SentencePiece unigram",
    "rwkv": "RWKV trie",
    "plamo2": "PLaMo-2 unigram",
    "no_vocab": "none",
}


def _tokenizer(md: dict[str, Any]) -> str:
    model = _str(md.get("tokenizer.ggml.model"))
    if model is None:
        return ""
    words = _TOKENIZER_KINDS.get(model, model)
    pre = _str(md.get("tokenizer.ggml.pre"))
    tokens = md.get("tokenizer.ggml.tokens")
    n = len(tokens) if tokens is not None and hasattr(tokens, "__len__") else 0
    details = [f"tokenizer.ggml.model {model}"] + ([f"pre-tokenizer {pre}"] if pre else [])
    details += [f"{n:,} tokens"] if n else []
    return f"{words} ({', '.join(details)})"


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def _file_type(v: Any) -> str | None:
    return file_type_name(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _revision(path: Path, header: GGUFHeader) -> str:
    """Identity of the file without reading its data: size, mtime and the tensor table."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}|{st.st_mtime_ns}|{header.data_start}\n".encode())
    for t in header.tensors:
        h.update(f"{t.name}|{t.dims}|{t.type}|{t.offset}\n".encode())
    return "gguf-" + h.hexdigest()[:16]
