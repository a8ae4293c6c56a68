"""A GGUF file back into a Hugging Face checkpoint: edgekit's converter, inverted through the
architecture family.

The converter (quantize/gguf.py) maps each checkpoint tensor to its GGUF name through gguf's
tensor map, reorders Llama's q/k rows for interleaved RoPE, stacks per-expert weights, may
change values elementwise (Gemma's norms + 1) and may cut one tensor into pieces (DeepSeek's
kv_b into attn_k_b / attn_v_b). The importer undoes each step with the same family hooks:
`hf_tensor_names` names every GGUF tensor in the checkpoint (`{e}` unstacks experts),
`gguf_unpermute_heads` says which rows to move back, the inverse of `gguf_values` is
derived from it (an affine change: its offset and scale, checked on probe values), and
`gguf_pieces` is inverted by cutting an array of element indices the same way and
scattering the pieces back (DeepSeek's kv_b_proj from attn_k_b, transposed per head, and
attn_v_b). config.json comes from the file's `Arch` and metadata
(`hf_config`), the tokenizer from the file's vocabulary through transformers' GGUF
tokenizer converters. Quantized tensors are dequantized by gguf-py.

A float file (F32 / F16 / BF16 tensors only) keeps each tensor's type, so converting the
import back to that type gives the same bytes (an F16 file's F32 norms stay F32; config.json's
dtype is the type most matrix weights are in); a file with any quantized tensor imports as
BF16. Tensors are written one at a time (5 GB shards with an index, as transformers writes
them); one GGUF tensor is in memory at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.gguf_io.reader import GGUFHeader, TensorInfo, read_header
from edgekit.models.arch import Arch, ArchFamily, GGUFMetadata, arch_family
from edgekit.models.gguf_arch import arch_from_header

if TYPE_CHECKING:
    import numpy as np

# part of the cache key of an import (models/source.py): a new version re-imports
IMPORTER_VERSION = 1
SHARD_BYTES = 5 * 1024**3
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_FLOAT_TYPES = ("F32", "F16", "BF16")
_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
# transformers' GGUF tokenizer converters whose tokenizers edgekit has checked against
# llama.cpp's on the same file (byte-level BPE). Not SentencePiece: transformers' "llama" and
# Gemma converters rebuild merges from the scores and lose the special tokens' roles, so such
# files stay with transformers' own loader until edgekit writes their tokenizer.model
_REBUILDS = ("gpt2",)
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED, _UNUSED = 3, 4, 5


@dataclass(frozen=True)
class Imported:
    """What an import wrote, for the cache's edgekit-import.json."""

    arch: Arch
    dtype: str  # F32 | F16 | BF16
    n_tensors: int
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "importer": "edgekit",
            "family": self.arch.family,
            "dtype": self.dtype,
            "tensors": self.n_tensors,
        }


@dataclass(frozen=True)
class _Out:
    """One checkpoint tensor to write: its name, PyTorch shape, float32 values, the GGUF
    tensor it comes from (the first piece of a cut one) and the type it is written in."""

    name: str
    shape: tuple[int, ...]
    values: Callable[[], np.ndarray]
    source: str
    dtype: str = "BF16"


def refusal(path: Path) -> str | None:
    """Why edgekit's importer does not read the GGUF at `path`, in one line, or None when it
    does: its family imports (gguf_importable), its tokenizer kind is one the family rebuilds,
    every tensor has a checkpoint name (a dry run of the import over the tensor table) and
    the config can be written (where it needs no tensor data). Only the header is read; a
    broken file raises a one-line error."""
    from edgekit.models.arch import find_gguf_family

    header = read_header(path)
    name = header.metadata.get("general.architecture")
    if not isinstance(name, str) or find_gguf_family(name) is None:
        return f"no architecture family of edgekit reads GGUF architecture {name!r}"
    arch = arch_from_header(header)
    family = arch_family(arch)
    if not family.gguf_importable:
        return f"edgekit's GGUF importer does not read {arch.family} files yet"
    model = header.metadata.get("tokenizer.ggml.model")
    key = family.hf_tokenizer_converter(model) if isinstance(model, str) else None
    if key not in _REBUILDS:
        return f"edgekit cannot rebuild a tokenizer of kind {model!r} (tokenizer.ggml.model) yet"
    try:
        _plan(path, arch, family, header.tensor_shapes(), _NoData())
        if not family.gguf_config_tensors:
            # the config too, where it needs no tensor data (a setting the checkpoint's
            # transformers class cannot express is refused here, before anything is written)
            m = GGUFMetadata(name, header.metadata, header.tensor_shapes(), str(path))
            family.hf_config(arch, m, {})
    except EdgekitError as e:
        return e.one_line()
    return None


def import_checkpoint(path: Path, out: Path) -> Imported:
    """Write the checkpoint in the GGUF at `path` into the (new, empty) directory `out`:
    config.json, the safetensors weights, the tokenizer. A file `refusal` names a reason for
    raises it as an EdgekitError before anything is written."""
    header = read_header(path, arrays=lambda key: True)
    why_not = refusal(path)
    if why_not is not None:
        raise EdgekitError(f"{path}: {why_not}")
    arch = arch_from_header(header)
    family = arch_family(arch)
    m = GGUFMetadata(
        str(header.metadata["general.architecture"]), header.metadata, header.tensor_shapes(), str(path)
    )
    load = _Loader(path, header)
    vectors = {
        n: [float(x) for x in load(n).ravel()] for n in family.gguf_config_tensors if n in load.tensors
    }
    types = {t.name: t.type for t in header.tensors}
    if set(types.values()) <= set(_FLOAT_TYPES):
        # a float file: each tensor in its own type (F32 norms and routers of an F16 file stay
        # F32); config.json names the type most of the matrices' weights are in
        share = Counter[str]()
        for t in header.tensors:
            if len(t.dims) >= 2:
                share[t.type] += math.prod(t.dims)
        dtype = share.most_common(1)[0][0] if share else "F32"
        outs = [
            replace(o, dtype=types[o.source]) for o in _plan(path, arch, family, header.tensor_shapes(), load)
        ]
    else:
        dtype = "BF16"
        outs = _plan(path, arch, family, header.tensor_shapes(), load)
    files = _write_safetensors(out, outs)
    _write_config(out, family.hf_config(arch, m, vectors), header.metadata, dtype)
    _write_tokenizer(out, path, family, header.metadata)
    return Imported(arch, dtype, len(outs), files)


# ---- tensors ---------------------------------------------------------------------------------


def _plan(
    path: Path, arch: Arch, family: ArchFamily, shapes: dict[str, tuple[int, ...]], load: _Loader
) -> list[_Out]:
    """Every checkpoint tensor of the file (`shapes`: its tensor table in GGUF order), each
    with the way to rebuild its values through `load`; nothing is read until asked for."""
    names = family.hf_tensor_names
    outs: list[_Out] = []
    used = set(family.gguf_config_tensors) & set(shapes)
    for gname, dims in shapes.items():
        if gname in used:
            continue
        block = _BLOCK.match(gname)
        key, layer = (f"blk.{{i}}.{block.group(2)}", int(block.group(1))) if block else (gname, -1)
        template = names.get(key)
        if template is None:
            continue  # a piece of a cut tensor, found below, or a tensor with no name: refused
        used.add(gname)
        shape = tuple(int(d) for d in reversed(dims))
        undo = _inverse_values(family, arch, gname)
        if "{e}" in template:
            if len(shape) != 3:
                raise EdgekitError(f"{path}: {gname} has shape {list(shape)}, expected stacked experts")
            for e in range(shape[0]):
                outs.append(
                    _Out(template.format(i=layer, e=e), shape[1:], _expert(load, gname, e, undo), gname)
                )
            continue
        heads = family.gguf_unpermute_heads(arch, gname)
        outs.append(_Out(template.format(i=layer), shape, _whole(load, gname, heads, undo), gname))
    outs += _unpieced(arch, family, shapes, load, used)
    left = sorted(set(shapes) - used)
    if left:
        raise EdgekitError(
            f"{path}: tensor {left[0]} has no checkpoint name for {arch.family}",
            "the file does not match its architecture, or edgekit's importer does not know this layout",
        )
    return outs


def _unpieced(
    arch: Arch, family: ArchFamily, shapes: dict[str, tuple[int, ...]], load: _Loader, used: set[str]
) -> list[_Out]:
    """Checkpoint tensors the converter wrote as pieces (the file lacks their own name)."""
    outs: list[_Out] = []
    for key, template in family.hf_tensor_names.items():
        layers = range(arch.n_layers) if "{i}" in key else [-1]
        for i in layers:
            gname = key.format(i=i)
            shape = None if gname in shapes else family.hf_piece_shape(arch, gname)
            if shape is None:
                continue
            pieces = family.gguf_pieces(arch, gname, shape) or []
            if not pieces or any(p.name not in shapes for p in pieces):
                continue
            used.update(p.name for p in pieces)
            merged = _merge(load, gname, tuple(shape), pieces)
            outs.append(_Out(template.format(i=i), tuple(shape), merged, pieces[0].name))
    return outs


class _Loader:
    """Dequantizes a file's tensors to float32 in numpy order, straight from a memory map of
    the file at the offsets its (checked) tensor table gives, keeping the last one (the
    experts of a stacked tensor are written one after another)."""

    def __init__(self, path: Path, header: GGUFHeader | None) -> None:
        self.path = path
        self.tensors = {t.name: t for t in header.tensors} if header else {}
        self.start = header.data_start if header else 0
        self.map: np.memmap | None = None
        self.last: tuple[str, np.ndarray] | None = None

    def __call__(self, gname: str) -> np.ndarray:
        if self.last is None or self.last[0] != gname:
            self.last = (gname, self._dequantize(self.tensors[gname]))
        return self.last[1]

    def _dequantize(self, t: TensorInfo) -> np.ndarray:
        import numpy as np
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        if self.map is None:
            self.map = np.memmap(self.path, dtype=np.uint8, mode="r")
        shape = tuple(reversed(t.dims))
        rows = math.prod(shape[:-1])
        at = self.start + t.offset
        raw = np.asarray(self.map[at : at + t.nbytes]).reshape(rows, t.nbytes // rows)
        try:
            x = dequantize(raw, GGMLQuantizationType[t.type])
        except (KeyError, NotImplementedError, ValueError) as e:
            raise EdgekitError(f"{self.path}: cannot dequantize {t.name} ({t.type}: {e})") from None
        return np.ascontiguousarray(x, dtype=np.float32).reshape(shape)


class _NoData(_Loader):
    """The loader of a dry run (`refusal`): planning reads no tensor data."""

    def __init__(self) -> None:
        super().__init__(Path(), None)

    def __call__(self, gname: str) -> np.ndarray:
        raise AssertionError(f"{gname}: a dry run reads no data")


def _whole(load: _Loader, gname: str, heads: int | None, undo: Callable) -> Callable[[], np.ndarray]:
    def values() -> np.ndarray:
        x = load(gname)
        return undo(_repermute_rope(x, heads) if heads is not None else x)

    return values


def _expert(load: _Loader, gname: str, e: int, undo: Callable) -> Callable[[], np.ndarray]:
    return lambda: undo(load(gname)[e])


def _repermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of the converter's reorder: within each head, row 2j goes back to j and
    row 2j + 1 to head_dim / 2 + j (HF's rotate_half layout)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _inverse_values(family: ArchFamily, arch: Arch, gname: str) -> Callable[[np.ndarray], np.ndarray]:
    """The inverse of the family's `gguf_values` for `gname`: the converter's elementwise
    change must be affine (y = scale * x + offset), read off probe values and checked."""
    import numpy as np

    fwd = family.gguf_values(arch, gname)
    if fwd is None:
        return lambda x: x
    probe = np.array([0.0, 1.0, -2.5, 3.0, 0.125], dtype=np.float32)
    y = np.asarray(fwd(probe.copy()), dtype=np.float64)
    offset, scale = float(y[0]), float(y[1] - y[0])
    if scale == 0 or not np.allclose(y, scale * probe + offset, rtol=0, atol=1e-6 * max(1.0, abs(scale))):
        raise EdgekitError(f"{gname}: the converter changes its values in a way edgekit cannot undo")
    off32, scale32 = np.float32(offset), np.float32(scale)
    if scale32 == 1:
        return lambda x: x - off32
    return lambda x: (x - off32) / scale32


def _merge(load: _Loader, gname: str, shape: tuple[int, ...], pieces: list[Any]) -> Callable[[], np.ndarray]:
    """The checkpoint tensor `gname` from its pieces: each piece's `cut` applied to the
    element indices of the whole says where its values came from."""

    def values() -> np.ndarray:
        import numpy as np

        n = math.prod(shape)
        index = np.arange(n, dtype=np.float64).reshape(shape)  # exact integers below 2**53
        out = np.zeros(n, dtype=np.float32)
        seen = np.zeros(n, dtype=np.int64)
        for p in pieces:
            where = np.asarray(p.cut(index))
            vals = load(p.name)
            if where.shape != vals.shape or not np.array_equal(where, np.round(where)):
                raise EdgekitError(f"{p.name}: does not match the piece the converter cuts from {gname}")
            flat = where.astype(np.int64).ravel()
            out[flat] = vals.ravel()
            np.add.at(seen, flat, 1)
        if not (seen == 1).all():
            raise EdgekitError(
                f"{gname}: its pieces do not cover each element once; edgekit cannot rebuild it"
            )
        return out.reshape(shape)

    return values


# ---- safetensors -----------------------------------------------------------------------------


def _write_safetensors(out: Path, outs: list[_Out]) -> list[str]:
    """The tensors in shards of at most SHARD_BYTES (one file, model.safetensors, when they
    fit), each written as its header says; an index names the shards of a larger model."""
    shards: list[list[_Out]] = [[]]
    size = 0
    for o in outs:
        n = _ITEM_BYTES[o.dtype] * math.prod(o.shape)
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(o)
        size += n
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    for fname, shard in zip(files, shards, strict=True):
        _write_shard(out / fname, shard)
        weight_map |= {o.name: fname for o in shard}
    if len(files) > 1:
        total = sum(_ITEM_BYTES[o.dtype] * math.prod(o.shape) for o in outs)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return files


def _write_shard(path: Path, outs: list[_Out]) -> None:
    import struct

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for o in outs:
        n = _ITEM_BYTES[o.dtype] * math.prod(o.shape)
        header[o.name] = {"dtype": o.dtype, "shape": list(o.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for o in outs:
            x = o.values()
            if tuple(x.shape) != o.shape:
                raise EdgekitError(f"{o.name}: rebuilt as {list(x.shape)}, expected {list(o.shape)}")
            for chunk in _encoded(x, o.dtype):
                fh.write(chunk)


def _encoded(x: np.ndarray, dtype: str) -> Iterator[bytes]:
    """Little-endian bytes of `x` in `dtype`, 16M elements at a time; BF16 rounds to
    nearest even, as torch does."""
    import numpy as np

    flat = x.reshape(-1)
    step = 16 * 1024 * 1024
    for s in range(0, flat.size, step):
        part = np.ascontiguousarray(flat[s : s + step], dtype=np.float32)
        if dtype == "F32":
            yield part.astype("<f4").tobytes()
        elif dtype == "F16":
            yield part.astype("<f2").tobytes()
        else:
            bits = part.view(np.uint32)
            # wraps only for negative NaNs, replaced below
            rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            nan = np.isnan(part)
            if nan.any():
                rounded[nan] = (bits[nan] >> np.uint32(16)) | np.uint32(0x40)  # a NaN stays a (quiet) NaN
            yield rounded.astype("<u2").tobytes()


# ---- config and tokenizer -------------------------------------------------------------------


def _write_config(out: Path, cfg: dict[str, Any], md: dict[str, Any], dtype: str) -> None:
    """config.json through transformers' config class (its defaults filled in, its RoPE
    parameters standardised), with the file's special-token ids."""
    from transformers import AutoConfig

    cfg = dict(cfg)
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        tid = md.get(f"tokenizer.ggml.{key}_token_id")
        cfg[f"{role}_token_id"] = int(tid) if isinstance(tid, int) else None
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    config.dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    config.save_pretrained(out)
    # the special-token ids generation starts and stops with, as transformers saves a model
    from transformers import GenerationConfig

    GenerationConfig.from_model_config(config).save_pretrained(out)


def _write_tokenizer(out: Path, path: Path, family: ArchFamily, md: dict[str, Any]) -> None:
    """The file's vocabulary as a transformers fast tokenizer: merges and tokens through
    transformers' converter for its tokenizer model, control tokens as special tokens, a BOS
    prepended where the file says llama.cpp adds one. (The pre-tokenizer named by
    tokenizer.ggml.pre is restored by the caller, for both importers.)"""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.ggml import (
        GGUF_TO_FAST_CONVERTERS,
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    model = md.get("tokenizer.ggml.model")
    key = family.hf_tokenizer_converter(model) if isinstance(model, str) else None
    if key not in _REBUILDS or key not in GGUF_TO_FAST_CONVERTERS:
        raise EdgekitError(
            f"{path}: edgekit cannot rebuild a tokenizer of kind {model!r} (tokenizer.ggml.model)"
        )
    sections = {
        section: {n: md[f"tokenizer.{k}"] for k, n in renames.items() if f"tokenizer.{k}" in md}
        for section, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokens = sections["tokenizer"].get("tokens")
    if not isinstance(tokens, list) or not tokens:
        raise EdgekitError(f"{path}: no tokenizer.ggml.tokens")
    config = {k: v for k, v in sections["tokenizer_config"].items() if k != "model_type"}
    for name in ("bos", "eos", "pad", "unk"):
        tid = config.pop(f"{name}_token_id", None)
        config[f"{name}_token"] = tokens[tid] if isinstance(tid, int) and 0 <= tid < len(tokens) else None
    fast, extra = convert_gguf_tokenizer(key, dict(sections["tokenizer"]))
    types = md.get("tokenizer.ggml.token_type")
    if key == "gpt2" and isinstance(types, list) and _UNUSED in types:
        fast = _without_unused(fast, types)
    if isinstance(types, list) and len(types) == len(tokens):
        fast.add_special_tokens(
            [
                AddedToken(t, special=True, normalized=False)
                for t, ty in zip(tokens, types, strict=True)
                if ty == _CONTROL
            ]
        )
        fast.add_tokens(
            [
                AddedToken(t, special=False, normalized=False)
                for t, ty in zip(tokens, types, strict=True)
                if ty == _USER_DEFINED
            ]
        )
    bos = config.get("bos_token")
    if md.get("tokenizer.ggml.add_bos_token") is True and bos and key == "gpt2":
        bos_id = fast.token_to_id(bos)
        fast.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    elif key == "gpt2":
        # nothing is added: no post-processor (transformers' byte-level one changes no id, and
        # llama.cpp's converter would read it as a statement that no EOS is added, which the
        # file does not make)
        fast.post_processor = None
    tok = PreTrainedTokenizerFast(tokenizer_object=fast, **{**config, **extra})
    tok.save_pretrained(out)
    # whether llama.cpp adds BOS / EOS, where the file says, as llama.cpp's converter reads it
    adds = {
        f"add_{role}_token": md[f"tokenizer.ggml.add_{role}_token"]
        for role in ("bos", "eos")
        if isinstance(md.get(f"tokenizer.ggml.add_{role}_token"), bool)
    }
    if adds:
        tc = out / "tokenizer_config.json"
        tc.write_text(json.dumps({**json.loads(tc.read_text()), **adds}, indent=2, ensure_ascii=False))


def _without_unused(fast: Any, types: list[Any]) -> Any:
    """The byte-level BPE vocabulary without the file's UNUSED entries: the padding rows a
    converter adds up to the embedding's size ([PAD600] ...), which no merge reaches; a
    checkpoint has no token for them (so converting it back pads them again)."""
    from tokenizers import Tokenizer

    data = json.loads(fast.to_str())
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = {
        t: i for t, i in vocab.items() if not (0 <= i < len(types) and types[i] == _UNUSED)
    }
    return Tokenizer.from_str(json.dumps(data))
