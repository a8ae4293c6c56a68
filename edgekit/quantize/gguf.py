"""One-pass Hugging Face safetensors -> quantized GGUF.

llama.cpp's usual path writes a full F16 GGUF (convert_hf_to_gguf.py) and reads it back to
quantize (llama-quantize). We stream instead: each tensor is read from safetensors, mapped
to its GGUF name and layout, quantized with ggml's own kernels (`ggml_lib`), and written;
one tensor is in memory at a time. The per-tensor types come from `gguf_mix`, which
implements llama.cpp's mix rules, so the file matches what llama-quantize would write.
The file appears at the destination only when complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types
from edgekit.models.arch import Arch, Tensor, arch_family, model_types_supported_by
from edgekit.quantize import tensor_cache
from edgekit.quantize.gguf_mix import MIX_DEFAULT, assign_types
from edgekit.quantize.tensor_cache import UNCACHED, CacheStats, TensorCache

if TYPE_CHECKING:
    import numpy as np


# llama_ftype values written to general.file_type (include/llama.h)
FILE_TYPE = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q2_K_S": 21,
    "BF16": 32,
}


@dataclass
class Recipe:
    mix: str = "Q4_K_M"
    overrides: list[tuple[str, str]] = field(default_factory=list)
    imatrix: dict[str, np.ndarray] | None = None  # gguf tensor name -> per-column importance
    imatrix_source: str | None = None
    threads: int | None = None

    def to_dict(self) -> dict:
        return {
            "mix": self.mix,
            "overrides": [f"{p}={t}" for p, t in self.overrides],
            "imatrix": self.imatrix_source,
            "threads": self.threads,
        }


@dataclass
class TensorRecord:
    name: str
    shape: tuple[int, ...]  # GGUF order
    type: str
    nbytes: int


@dataclass
class ConvertResult:
    path: Path
    mix: str
    tensors: list[TensorRecord]
    n_params: int
    file_bytes: int
    tensor_cache: CacheStats | None = None  # None: the cache was off

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * sum(t.nbytes for t in self.tensors) / self.n_params

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.type] = out.get(t.type, 0) + 1
        return dict(sorted(out.items()))


@dataclass
class _Planned:
    name: str  # GGUF name
    gguf_shape: tuple[int, ...]
    role: str
    layer: int
    chunks: Callable[[], Iterator[tuple[int, np.ndarray]]]  # -> (expert, float32 rows) in file order
    source: str = ""  # the checkpoint tensor it comes from (experts: their name without the index)


# rows are read, converted and quantized in slices of at most this many elements (16 MiB
# of float32): peak memory stays flat however large a tensor is, and since every ggml
# quantizer works row by row the bytes are the same as quantizing the whole tensor
CHUNK_ELEMENTS = 4 * 1024 * 1024


def parse_overrides(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for s in specs:
        if "=" not in s:
            raise EdgekitError(f"--tensor-type {s!r}: expected REGEX=TYPE")
        pat, ty = s.rsplit("=", 1)
        try:
            re.compile(pat)
        except re.error as e:
            raise EdgekitError(f"--tensor-type {s!r}: bad regular expression ({e})") from None
        if ty.upper() not in ggml_types.TYPES:
            raise EdgekitError(f"--tensor-type {s!r}: unknown ggml type {ty!r}")
        out.append((pat, ty.upper()))
    return out


def convert(
    checkpoint, out_path: Path, recipe: Recipe, progress: Callable[[str, int, int], None] | None = None
) -> ConvertResult:
    """Write `checkpoint` (edgekit.models.source.Checkpoint) as one GGUF file at `out_path`."""
    import gguf

    from edgekit.models.gguf_vocab import gguf_vocab
    from edgekit.models.weights import SafetensorsCheckpoint
    from edgekit.quantize import validate

    mix = recipe.mix.upper()
    if mix not in MIX_DEFAULT:
        raise EdgekitError(f"unknown GGUF type '{recipe.mix}'", f"choose one of {', '.join(MIX_DEFAULT)}")
    arch = checkpoint.entry.arch
    model_arch = gguf_arch_name(arch)
    cfg = json.loads((checkpoint.path / "config.json").read_text())
    _check_rope_scaling(cfg, arch)
    arch_family(arch).gguf_check_config(arch, cfg, checkpoint.path)
    # before any output: a missing or unreadable tokenizer fails fast
    vocab = gguf_vocab(arch_family(arch).gguf_vocab, checkpoint.path, arch.vocab)
    weights = SafetensorsCheckpoint(checkpoint.safetensors_files())
    try:
        # the checkpoint against its architecture, from the headers, before anything is written
        validate.check_weights(arch, weights)
        planned = plan_tensors(weights, arch, cfg)
        validate.check_inventory(arch, [(p.name, p.gguf_shape, p.source) for p in planned])
        inventory = [Tensor(p.name, p.gguf_shape, p.role, p.layer) for p in planned]
        types = assign_types(inventory, mix, arch, recipe.overrides, has_imatrix=bool(recipe.imatrix))
        _check_imatrix(types, recipe)
        gguf_arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, model_arch)]
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".part", dir=out_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        records: list[TensorRecord] = []
        cache = tensor_cache.open_cache()
        try:
            w = gguf.GGUFWriter(tmp, gguf_arch)
            write_metadata(w, checkpoint, cfg, arch, mix, vocab, gguf)
            for p in planned:
                ty = types[p.name]
                nbytes = declare_tensor(w, p.name, p.gguf_shape, ty)
                records.append(TensorRecord(p.name, p.gguf_shape, ty, nbytes))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for i, p in enumerate(planned):
                if progress:
                    progress(p.name, i, len(planned))
                # the writer only asks the array for nbytes and tofile
                streamed = _Streamed(p, types[p.name], recipe, records[i].nbytes, cache)
                w.write_tensor_data(streamed)  # type: ignore[arg-type]
            if progress:
                progress("", len(planned), len(planned))
            w.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, out_path)
        except OSError as e:
            from edgekit.outputs import write_cause

            raise EdgekitError(f"cannot write {out_path}: {write_cause(e, out_path)}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        weights.close()
    n_params = sum(math.prod(p.gguf_shape) for p in planned)
    stats = cache.stats if cache else None
    return ConvertResult(out_path, mix, records, n_params, out_path.stat().st_size, stats)


def __getattr__(name: str) -> Any:
    # SUPPORTED: HF model_type -> llama.cpp architecture name (a gguf.MODEL_ARCH member) of
    # every architecture family the converter supports, built when asked for (families
    # registered later included). Code of edgekit asks `gguf_arch_name(arch)` or the family.
    if name == "SUPPORTED":
        return {mt: gguf_arch_name_of(mt) for mt in model_types_supported_by("gguf")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gguf_arch_name_of(model_type: str) -> str:
    return str(arch_family(model_type).gguf_arch)


def gguf_arch_name(arch: Arch) -> str:
    """llama.cpp's architecture (a gguf.MODEL_ARCH member name) for `arch`; an EdgekitError
    when the converter does not handle its family."""
    impl = arch_family(arch)
    if not impl.supports("gguf") or not impl.gguf_arch:
        raise EdgekitError(
            f"GGUF conversion of '{arch.family}' models is not supported yet",
            f"supported: {', '.join(model_types_supported_by('gguf'))}",
        )
    return impl.gguf_arch


# ---- tensors -------------------------------------------------------------------------------


def plan_tensors(weights, arch, cfg: dict) -> list[_Planned]:
    """Every GGUF tensor the converter writes for `weights`, in write order; reads headers only."""
    return _plan_tensors(weights, arch) + _extra_tensors(arch, cfg)


def _plan_tensors(weights, arch) -> list[_Planned]:
    import gguf

    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, gguf_arch_name(arch)), arch.n_layers)
    planned: list[_Planned] = []
    # (layer, HF name of the stacked tensor: the expert's name without its index) -> names
    experts: dict[tuple[int, str], dict[int, str]] = {}
    expert_re = re.compile(arch_family(arch).hf_expert_pattern)
    family = arch_family(arch)
    unnamed: list[str] = []
    for name in weights.names():
        if name.endswith("rotary_emb.inv_freq") or family.gguf_skips(arch, name):
            continue  # experts too (DeepSeek-V3's multi-token-prediction layer has its own)
        if m := expert_re.match(name):
            stacked = name[: m.start("expert") - 1] + name[m.end("expert") :]
            experts.setdefault((int(m.group("layer")), stacked), {})[int(m.group("expert"))] = name
            continue
        gname = tmap.get_name(_mappable(name), try_suffixes=(".weight", ".bias"))
        if gname is None:
            unnamed.append(name)
            continue
        shape = weights.shape(name)
        pieces = family.gguf_pieces(arch, gname, shape)
        if pieces is not None:
            planned += [_piece(weights, name, piece) for piece in pieces]
            continue
        chunks = _chunker(weights, name, gname, arch)
        planned.append(_Planned(gname, tuple(reversed(shape)), _role(gname), _layer(gname), chunks, name))
    if unnamed:
        shown = ", ".join(sorted(unnamed)[:4]) + (f" and {len(unnamed) - 4} more" if len(unnamed) > 4 else "")
        raise EdgekitError(
            f"unexpected tensors for {arch.family} as config.json describes it (no GGUF name): {shown}"
        )
    for (layer, stacked), by_idx in sorted(experts.items()):
        if sorted(by_idx) != list(range(arch.n_experts)):
            raise EdgekitError(
                f"{stacked}: found {len(by_idx)} of {arch.n_experts} experts in the checkpoint"
            )
        found = tmap.get_name(stacked, try_suffixes=(".weight",))
        if found is None:
            raise EdgekitError(f"{stacked}: the experts have no GGUF name for {arch.family}")
        gname = found if found.endswith(".weight") else found + ".weight"
        first = weights.shape(by_idx[0])
        names = [by_idx[e] for e in range(arch.n_experts)]
        planned.append(
            _Planned(
                gname,
                (first[1], first[0], arch.n_experts),
                "expert",
                layer,
                _expert_chunker(weights, names),
                stacked,
            )
        )
    if arch.tied_embeddings:
        planned = [p for p in planned if p.name != "output.weight"]
    if not any(p.name == "token_embd.weight" for p in planned):
        raise EdgekitError("the checkpoint has no token embedding (model.embed_tokens.weight)")
    planned.sort(key=_write_order)
    return planned


def _mappable(hf_name: str) -> str:
    """The name gguf's tensor map knows: DeepSeek-V3's router bias is stored as
    `gate.e_score_correction_bias`, which llama.cpp's converter reads as a bias of
    `gate.e_score_correction` (for every architecture)."""
    if hf_name.endswith("e_score_correction_bias"):
        return hf_name[: -len("_bias")] + ".bias"
    return hf_name


def _piece(weights, hf_name: str, piece) -> _Planned:
    """A GGUF tensor cut from a whole checkpoint tensor (small: one layer's projection);
    its matrices are written one by one, so a per-matrix importance applies to each."""

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        x = piece.cut(weights.load_f32(hf_name))
        if x.shape != tuple(reversed(piece.shape)):
            raise RuntimeError(f"{piece.name}: cut to {x.shape}, planned {tuple(reversed(piece.shape))}")
        mats = x.reshape(-1, *x.shape[-2:]) if x.ndim >= 2 else x.reshape(1, 1, -1)
        yield from enumerate(mats)

    return _Planned(piece.name, tuple(piece.shape), _role(piece.name), _layer(piece.name), chunks, hf_name)


def _extra_tensors(arch, cfg: dict) -> list[_Planned]:
    """The family's F32 vectors from config.json (Phi-3's long-RoPE factors), written
    after the blocks."""
    import numpy as np

    out = []
    for name, values in arch_family(arch).gguf_extra_tensors(arch, cfg).items():
        row = np.asarray(values, dtype=np.float32).reshape(1, -1)
        # a 1-D weight: never quantized, as a norm
        out.append(_Planned(name, (row.shape[1],), "norm", -1, _whole(row)))
    return out


def _whole(rows: np.ndarray) -> Callable[[], Iterator[tuple[int, np.ndarray]]]:
    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        yield 0, rows

    return chunks


def _write_order(p: _Planned):
    # token embedding, then block by block, then the output norm and projection
    if p.layer >= 0:
        return (1, p.layer, p.name)
    return (0 if p.name.startswith("token_embd") else 2, 0, p.name)


def _chunker(weights, hf_name: str, gname: str, arch):
    heads = arch_family(arch).gguf_unpermute_heads(arch, gname)
    # an elementwise change of the values (Gemma's norms + 1): slice by slice, as read
    fix = arch_family(arch).gguf_values(arch, gname) or (lambda x: x)

    def chunks():
        if heads is not None:  # rows move within each head: take the tensor whole (it is small)
            x = _unpermute_rope(weights.load_f32(hf_name), heads)
            yield 0, fix(x.reshape(x.shape[0], -1))
            return
        yield from ((0, fix(rows)) for rows in _row_slices(weights, hf_name))

    return chunks


def _expert_chunker(weights, names: list[str]):
    def chunks():
        for e, name in enumerate(names):
            yield from ((e, rows) for rows in _row_slices(weights, name))

    return chunks


def _row_slices(weights, name: str):
    shape = weights.shape(name)
    if len(shape) < 2:
        yield weights.load_f32(name).reshape(1, -1)
        return
    rows = shape[0]
    step = max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    for r0 in range(0, rows, step):
        yield weights.rows_f32(name, r0, min(rows, r0 + step))


class _Streamed:
    """Stands in for a numpy array in GGUFWriter.write_tensor_data: the writer asks for
    `nbytes` and calls `tofile`, which converts and writes the tensor slice by slice. A
    quantized type's bytes come from the tensor cache when it holds them (edgekit.quantize.
    tensor_cache: keyed by the rows as fed to the quantizer), else are quantized and stored."""

    def __init__(self, planned: _Planned, ty: str, recipe: Recipe, nbytes: int, cache: TensorCache | None):
        self.planned, self.ty, self.recipe, self.nbytes, self.cache = planned, ty, recipe, nbytes, cache

    def tofile(self, fout) -> None:
        imat = self.recipe.imatrix.get(self.planned.name) if self.recipe.imatrix else None
        if self.cache is None or self.ty in UNCACHED:
            self._encode(fout, self._checked(), imat, None)
            return
        key, chunks = self.cache.key(self.ty, imat, self._checked(), self.planned.chunks)
        if self.cache.copy_to(key, self.nbytes, fout):
            return
        with self.cache.store(key) as sink:
            self._encode(fout, chunks, imat, sink)

    def _checked(self) -> Iterator[tuple[int, np.ndarray]]:
        from edgekit.quantize.validate import check_finite

        for expert, rows in self.planned.chunks():
            # NaN/Inf refused as each slice is read (the .part file is removed on the way out)
            check_finite(self.planned.source or self.planned.name, rows)
            yield expert, rows

    def _encode(self, fout, chunks, imat, sink: Callable[[np.ndarray], None] | None) -> None:
        written = 0
        for expert, rows in chunks:
            row_imat = None
            if imat is not None:
                n = rows.shape[-1]
                row_imat = imat.reshape(-1, n)[expert] if imat.size > n else imat
            data = _encode_rows(rows, self.ty, row_imat, self.recipe.threads)
            data.tofile(fout)
            if sink is not None:
                sink(data)
            written += data.nbytes
        if written != self.nbytes:
            raise RuntimeError(f"{self.planned.name}: wrote {written} bytes, planned {self.nbytes}")


def _unpermute_rope(w, n_heads: int):
    """HF Llama checkpoints order each head's q/k rows as [all first halves, all second
    halves] for rotate_half RoPE; llama.cpp's LLAMA graph rotates interleaved pairs. Within
    each head, row j of the first half goes to 2j and row j of the second half to 2j + 1."""
    rows = w.shape[0]
    head_dim = rows // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _role(gname: str) -> str:
    if gname.startswith("token_embd"):
        return "embed"
    if gname.startswith("output."):
        return "output"
    if "norm" in gname:
        return "norm"
    if gname.endswith(".bias"):
        return "bias"
    if "ffn_gate_inp" in gname:
        return "router"
    if "_exps" in gname:
        return "expert"
    return "attn" if ".attn_" in gname else "ffn"


def _layer(gname: str) -> int:
    m = re.match(r"blk\.(\d+)\.", gname)
    return int(m.group(1)) if m else -1


def _rows(gguf_shape) -> int:
    return math.prod(gguf_shape) // gguf_shape[0]


def declare_tensor(writer, name: str, gguf_shape: tuple[int, ...], ggml_type: str) -> int:
    """Declare one tensor in a `gguf.GGUFWriter`'s table and return its byte count: F32 / F16
    by their numpy dtype and shape, a quantized type as uint8 rows of its byte length (the
    writer's convention for raw quantized data) with the ggml type."""
    import gguf
    import numpy as np

    nbytes = ggml_types.tensor_nbytes(gguf_shape, ggml_type)
    np_shape = tuple(reversed(gguf_shape))
    if ggml_type in ("F32", "F16"):
        dtype = np.dtype(np.float32 if ggml_type == "F32" else np.float16)
        writer.add_tensor_info(name, np_shape, dtype, nbytes)
    else:
        byte_shape = (*np_shape[:-1], nbytes // _rows(gguf_shape))
        qtype = gguf.GGMLQuantizationType[ggml_type]
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    return nbytes


def _encode_rows(rows, ty: str, imatrix, threads: int | None):
    import gguf
    import numpy as np

    if ty == "F32":
        return np.ascontiguousarray(rows, dtype=np.float32)
    if ty == "F16":
        return np.ascontiguousarray(rows, dtype=np.float16)
    if ty == "BF16":
        return gguf.quants.quantize(
            np.ascontiguousarray(rows, dtype=np.float32), gguf.GGMLQuantizationType.BF16
        )
    from edgekit.quantize.ggml_lib import quantize_rows

    return quantize_rows(rows, ty, imatrix, threads)


def _check_imatrix(types: dict[str, str], recipe: Recipe) -> None:
    from edgekit.quantize.ggml_lib import requires_imatrix

    needs = sorted({t for t in types.values() if t not in ("F32", "F16", "BF16") and requires_imatrix(t)})
    if needs and not recipe.imatrix:
        raise EdgekitError(f"{', '.join(needs)} need an importance matrix", "pass --imatrix auto or a file")


def _check_rope_scaling(cfg: dict, arch) -> None:
    kind = _rope_params(cfg).get("rope_type") or _rope_params(cfg).get("type") or "default"
    if kind not in ("default", "linear", "yarn", *arch_family(arch).gguf_rope_scaling):
        raise EdgekitError(f"RoPE scaling '{kind}' is not supported by edgekit's GGUF writer yet")


# ---- metadata -----------------------------------------------------------------------------

# keys whose values read as local (sliding-window) RoPE bases, as llama.cpp's converter reads them
_LOCAL_ROPE_THETA = (
    "local_rope_theta",
    "rope_local_theta",
    "rope_theta_local",
    "swa_rope_theta",
    "rope_local_base_freq",
)


def write_metadata(w, checkpoint, cfg: dict, arch, mix: str, vocab: dict, gguf) -> None:
    """Every key/value pair of a GGUF of `checkpoint` (its `entry` and `path`) in the `mix`:
    general.*, the architecture's hyperparameters from `cfg`, the tokenizer `vocab`."""
    entry = checkpoint.entry
    total, _ = arch.param_counts()
    w.add_type("model")
    w.add_name(entry.name)
    w.add_size_label(_size_label(total - arch.extra_params))
    w.add_quantized_by("edgekit")
    if entry.license.spdx or entry.license.key != "unknown":
        w.add_license(entry.license.spdx or entry.license.name)
    if entry.hub_id:
        w.add_source_url(f"https://huggingface.co/{entry.hub_id}")
        w.add_source_repo_url(f"https://huggingface.co/{entry.hub_id}")
    # the architecture's keys (without the `{arch}.` prefix): the common ones, then the
    # family's, which replace common ones they also name (DeepSeek's MLA key/value lengths)
    kv: dict[str, int | float | bool | str] = {
        "context_length": arch.max_context,
        "embedding_length": arch.hidden,
        "block_count": arch.n_layers,
        "feed_forward_length": int(cfg.get("intermediate_size") or arch.ffn),
        "attention.head_count": arch.n_heads,
        "attention.head_count_kv": arch.n_kv_heads,
        "attention.key_length": arch.head_dim,
        "attention.value_length": arch.head_dim,
        "rope.freq_base": _rope_theta(cfg, arch),
        "attention.layer_norm_rms_epsilon": float(cfg.get("rms_norm_eps", 1e-6)),
        "vocab_size": arch.vocab,
    }
    if (swa_theta := _local_rope_theta(cfg)) is not None:
        kv["rope.freq_base_swa"] = swa_theta
    kv.update(_rope_scaling(cfg))
    if arch.is_moe:
        kv["expert_count"] = arch.n_experts
        kv["expert_used_count"] = arch.experts_per_token
        kv["expert_feed_forward_length"] = arch.expert_ffn
    kv.update(_routing(cfg))
    family = arch_family(arch)
    kv.update(family.gguf_metadata(arch))
    kv.update(family.gguf_config_metadata(arch, cfg))
    for key, value in kv.items():
        _add(w, f"{w.arch}.{key}", value)
    w.add_file_type(FILE_TYPE[mix])
    if mix not in ("F32", "F16", "BF16"):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    spm = vocab.get("model") == "llama"  # SentencePiece: scores, no merges
    w.add_tokenizer_model(vocab.get("model", "gpt2"))
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    if spm:
        w.add_token_scores(vocab["scores"])
    w.add_token_types(vocab["types"])
    if "add_space_prefix" in vocab:
        w.add_add_space_prefix(vocab["add_space_prefix"])
    special = gguf.SpecialVocab(checkpoint.path, load_merges=not spm, n_vocab=arch.vocab)
    special.add_to_gguf(w, quiet=True)


# llama.cpp's expert gating functions (gguf.ExpertGatingFuncType) by the config's name
_GATING = {"softmax": 1, "sigmoid": 2}
_GATING_KEYS = (
    "score_function",
    "scoring_func",
    "score_func",
    "moe_router_activation",
    "moe_router_activation_func",
    "expert_selection_fn",
)


def _routing(cfg: dict) -> dict[str, int | float | bool | str]:
    """Expert groups and the gating function, wherever a config states them (as llama.cpp's
    converter writes them for every architecture)."""
    out: dict[str, int | float | bool | str] = {}
    if cfg.get("n_group") is not None:
        out["expert_group_count"] = int(cfg["n_group"])
    if cfg.get("topk_group") is not None:
        out["expert_group_used_count"] = int(cfg["topk_group"])
    func = next((cfg[k] for k in _GATING_KEYS if cfg.get(k) is not None), None)
    if func is not None:
        if func not in _GATING:
            raise EdgekitError(f"expert scoring function '{func}' is not supported by llama.cpp's GGUF")
        out["expert_gating_func"] = _GATING[func]
    return out


def _add(w, key: str, value: int | float | bool | str) -> None:
    # GGUF types as llama.cpp's converter writes these keys: bool, float32, uint32, string
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    else:
        w.add_string(key, value)


def _rope_all(cfg: dict) -> dict:
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return rp if isinstance(rp, dict) else {}


def _rope_params(cfg: dict) -> dict:
    """The RoPE parameters of the global-attention layers: a config that sets sliding and
    full attention apart (Gemma 3) keeps them under `full_attention`."""
    rp = _rope_all(cfg)
    full = rp.get("full_attention")
    return full if isinstance(full, dict) else rp


def _rope_theta(cfg: dict, arch) -> float:
    rp = _rope_params(cfg)
    if rp.get("rope_theta"):
        return float(rp["rope_theta"])
    return float(cfg.get("rope_theta", arch.rope_theta))


def _local_rope_theta(cfg: dict) -> float | None:
    """The RoPE base of the sliding-window layers, where the config states one."""
    local = _rope_all(cfg).get("sliding_attention")
    if isinstance(local, dict) and local.get("rope_theta") is not None:
        return float(local["rope_theta"])
    found = next((cfg[k] for k in _LOCAL_ROPE_THETA if cfg.get(k) is not None), None)
    return None if found is None else float(found)


def _rope_scaling(cfg: dict) -> dict[str, int | float | bool | str]:
    rp = _rope_params(cfg)
    kind = rp.get("rope_type") or rp.get("type")
    if kind not in ("linear", "yarn") or rp.get("factor") is None:
        return {}
    out: dict[str, int | float | bool | str] = {
        "rope.scaling.type": kind,
        "rope.scaling.factor": float(rp["factor"]),
    }
    if kind == "yarn":
        out["rope.scaling.original_context_length"] = int(rp.get("original_max_position_embeddings", 0))
        for key, names in (
            ("rope.scaling.yarn_ext_factor", ("extrapolation_factor",)),
            ("rope.scaling.yarn_attn_factor", ("attention_factor", "attn_factor")),
            ("rope.scaling.yarn_beta_fast", ("beta_fast",)),
            ("rope.scaling.yarn_beta_slow", ("beta_slow",)),
        ):
            found = next((rp[n] for n in names if rp.get(n) is not None), None)
            if found is not None:
                out[key] = float(found)
    return out


def _size_label(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B".replace(".0B", "B")
    return f"{round(n / 1e6)}M"


def check_checkpoint(path: Path, arch: Arch, files: list[Path]) -> None:
    """The whole header check of the checkpoint at `path` (its safetensors `files`) for a
    producer that loads it elsewhere (llm-compressor, ONNX export): layers, dtypes and, where
    the family has a GGUF mapping, the inventory through the converter's own plan."""
    from edgekit.models.weights import SafetensorsCheckpoint
    from edgekit.quantize import validate

    weights = SafetensorsCheckpoint(files)
    try:
        validate.check_weights(arch, weights)
        family = arch_family(arch)
        if family.supports("gguf") and family.gguf_arch:
            cfg = json.loads((path / "config.json").read_text())
            planned = plan_tensors(weights, arch, cfg)
            validate.check_inventory(arch, [(p.name, p.gguf_shape, p.source) for p in planned])
    finally:
        weights.close()
