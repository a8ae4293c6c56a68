"""GGUF files with a real model's exact tensor shapes and llama.cpp's per-tensor types, written
directly from random but well-formed blocks: no checkpoint, no BF16 intermediate, no
quantization time. For measuring speed and memory where the real weights cannot be had (a GPU
machine without a model hub: benchmarks/gpu_check.py); the values mean nothing.

Each quantized block is random bytes whose fp16 scale fields are overwritten with finite values
chosen so that the dequantized weights have a standard deviation near 0.02 (tested with gguf's
own dequantizers); the per-tensor types are `gguf_mix.assign_types` (llama-quantize's rules for
the mix at this layer count), the metadata and vocabulary are the converter's own
(`gguf.write_metadata`, the tokenizer padded to the model's vocabulary), norms are 1 and
routers random F32. One pool of blocks per type is written over and over (from a rotating
offset), so a file of many GiB takes about as long as the disk takes to write it.

Beside the file: an edgekit manifest whose source is a directory holding the config.json of
exactly these shapes (and the tokenizer), so `edgekit bench` and the planner know the model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from edgekit.artifact import Artifact, Manifest, publish, safe_stem, staging_path, tool_versions
from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types
from edgekit.models.arch import Arch, Tensor, arch_family, model_types_supported_by
from edgekit.quantize.gguf_mix import MIX_DEFAULT, assign_types

if TYPE_CHECKING:
    import numpy as np

# byte offsets of the fp16 fields of one block (ggml-common.h's block layouts) and the value each
# gets: (scale, offset) with the offset field (a minimum, K-quants' dmin) set to centre the weights
_FP16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q2_K": (82, 80),  # block_q2_K: scales[16], qs[64], d, dmin -> d at 80, dmin at 82
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
# (d, second field) per type, measured so that the dequantized std is about 0.02 (the test
# checks 0.005 .. 0.08 and finiteness through gguf.quants.dequantize)
_FP16_VALUES: dict[str, tuple[float, ...]] = {
    "Q4_0": (0.0043,),
    "Q4_1": (0.0043, -0.032),
    "Q5_0": (0.0022,),
    "Q5_1": (0.0022, -0.034),
    "Q8_0": (0.00027,),
    "Q2_K": (0.0012, 0.0012),
    "Q3_K": (0.00045,),
    "Q4_K": (0.00007, 0.0005),
    "Q5_K": (0.000035, 0.0005),
    "Q6_K": (0.000015,),
}
POOL_BYTES = 8 << 20  # random bytes per type, written over and over
SHAPE_KEYS = (
    "n_layers",
    "hidden",
    "ffn",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "vocab",
    "n_experts",
    "experts_per_token",
    "expert_ffn",
)


def shaped_arch(model: str, layers: int | None = None, shape: Mapping[str, int] | None = None):
    """(catalogue entry, Arch) of `model` with `layers` layers and the `shape` fields replaced."""
    from edgekit.models.catalogue import resolve

    entry = resolve(model)
    arch = entry.arch
    if not arch_family(arch).supports("synthetic"):
        supported = ", ".join(model_types_supported_by("synthetic"))
        raise EdgekitError(f"random GGUF files are written for {supported}, not {arch.family}")
    changes: dict[str, Any] = {}
    for key, value in (shape or {}).items():
        if key not in SHAPE_KEYS:
            raise EdgekitError(f"unknown shape field '{key}'", f"choose from {', '.join(SHAPE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EdgekitError(f"shape field {key} must be a positive integer, not {value!r}")
        changes[key] = value
    if layers is not None:
        limit = changes.get("n_layers", arch.n_layers)
        if not 1 <= layers <= limit:
            raise EdgekitError(f"layers must be between 1 and {limit}")
        changes["n_layers"] = layers
    if changes:
        arch = dataclasses.replace(arch, **changes)
    if arch.is_moe and not 1 <= arch.experts_per_token <= arch.n_experts:
        raise EdgekitError("experts_per_token must be between 1 and n_experts")
    return entry, arch


def random_gguf(
    model: str,
    out_dir: Path,
    mix: str,
    tokenizer_dir: Path,
    layers: int | None = None,
    shape: Mapping[str, int] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Artifact:
    """Write `<name>-<mix>.gguf` shaped like `model` (a catalogue name) into `out_dir`, with its
    manifest, and the directory `<name>/` (config.json of these shapes and the tokenizer) the
    manifest names as its source. The tokenizer (tokenizer.json and tokenizer_config.json of a
    byte-level BPE vocabulary) is padded to the model's vocabulary, as the converter pads it."""
    import gguf
    import numpy as np

    from edgekit.models.gguf_vocab import gguf_vocab
    from edgekit.models.synthetic import hf_config
    from edgekit.quantize.gguf import FILE_TYPE, declare_tensor, write_metadata

    mix = mix.upper()
    if mix not in MIX_DEFAULT or mix not in FILE_TYPE:
        raise EdgekitError(f"unknown GGUF type '{mix}'", f"choose one of {', '.join(MIX_DEFAULT)}")
    entry, arch = shaped_arch(model, layers, shape)
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise EdgekitError(f"{tokenizer_dir}: no tokenizer.json")
    stem = safe_stem(name or f"{entry.name}-random")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = _source_dir(out_dir / stem, arch, hf_config(arch, arch.n_layers), tokenizer_dir)
    vocab = gguf_vocab(arch_family(arch).gguf_vocab, src, arch.vocab)
    cfg = json.loads((src / "config.json").read_text())
    tensors = sorted(arch.tensors(), key=_write_order)
    types = assign_types(tensors, mix, arch)
    unknown = sorted({t for t in types.values() if t not in _FP16_FIELDS and t not in ("F32", "F16")})
    if unknown:
        raise EdgekitError(f"no random block layout for {', '.join(unknown)}")
    shown = dataclasses.replace(entry, name=stem, arch=arch)
    dest = out_dir / f"{stem}-{mix}.gguf"
    staging = staging_path(dest)
    rng = np.random.default_rng(seed)
    pools: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    try:
        w = gguf.GGUFWriter(
            staging, gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, str(arch_family(arch).gguf_arch))]
        )
        write_metadata(w, SimpleNamespace(entry=shown, path=src), cfg, arch, mix, vocab, gguf)
        sizes = [declare_tensor(w, t.name, t.shape, types[t.name]) for t in tensors]
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (t, nbytes) in enumerate(zip(tensors, sizes, strict=True)):
            ty = types[t.name]
            if ty not in pools and ty in _FP16_FIELDS:
                pools[ty] = block_pool(ty, rng)
            w.write_tensor_data(_Filler(t, ty, nbytes, pools.get(ty), rng, i))  # type: ignore[arg-type]
        w.close()
    except OSError as e:
        staging.unlink(missing_ok=True)
        from edgekit.outputs import write_cause

        raise EdgekitError(f"cannot write {dest}: {write_cause(e, dest)}") from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for ty in types.values():
        counts[ty] = counts.get(ty, 0) + 1
    n_params = sum(t.n_elements for t in tensors)
    size = staging.stat().st_size
    manifest = Manifest(
        format=f"gguf:{mix}",
        file=dest.name,
        layout="gguf",
        size_bytes=size,
        sha256="",  # not computed: reading many GiB back would cost what writing them did
        bits_per_weight=round(8.0 * sum(sizes) / n_params, 4),
        source={
            "name": stem,
            "path": str(src),
            "shape_of": entry.name,
            "hub_id": None,
            "revision": f"random-seed-{seed}",
            "origin": "random",
            "note": f"random blocks with {entry.name}'s tensor shapes ({arch.n_layers} layers)",
        },
        recipe={"producer": "edgekit.quantize.gguf_random", "mix": mix, "seed": seed, "imatrix": None},
        tool_versions=tool_versions("gguf", "numpy"),
        details={
            "n_params": n_params,
            "tensor_types": dict(sorted(counts.items())),
            "write_seconds": round(seconds, 2),
            "random_weights": True,
        },
    )
    return publish(staging, dest, manifest)


def _source_dir(d: Path, arch: Arch, cfg: dict[str, Any], tokenizer_dir: Path) -> Path:
    """`d` with config.json (these shapes) and the tokenizer files, written whole or not at all."""
    from edgekit.atomic import replace_dir

    want = json.dumps(cfg, indent=2)
    if (d / "config.json").is_file() and (d / "config.json").read_text() == want:
        return d
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=d.parent))
    try:
        (tmp / "config.json").write_text(want)
        for fname in ("tokenizer.json", "tokenizer_config.json"):
            if (tokenizer_dir / fname).is_file():
                shutil.copyfile(tokenizer_dir / fname, tmp / fname)
        replace_dir(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


def _write_order(t: Tensor) -> tuple[int, int, str]:
    # as the converter writes: the token embedding, block by block, then the output norm and projection
    if t.layer >= 0:
        return (1, t.layer, t.name)
    return (0 if t.name.startswith("token_embd") else 2, 0, t.name)


def block_pool(ty: str, rng, nbytes: int = POOL_BYTES) -> np.ndarray:
    """Random blocks of ggml type `ty` (uint8, whole blocks) with finite fp16 scale fields."""
    import numpy as np

    gt = ggml_types.get(ty)
    n = max(1, nbytes // gt.block_bytes)
    blocks = rng.integers(0, 256, size=(n, gt.block_bytes), dtype=np.uint8)
    for off, value in zip(_FP16_FIELDS[ty], _FP16_VALUES[ty], strict=True):
        # each block's scale varies by up to +-50 % around the value: finite, never NaN or Inf
        scale = value * rng.uniform(0.5, 1.5, size=n)
        blocks[:, off : off + 2] = scale.astype("<f2").view(np.uint8).reshape(n, 2)
    return blocks.reshape(-1)


class _Filler:
    """Stands in for a numpy array in GGUFWriter.write_tensor_data (it asks for `nbytes` and calls
    `tofile`): a quantized tensor is its type's pool written from a rotating block offset; an F32
    norm is ones, other F32/F16 tensors (routers) small random values."""

    def __init__(self, t: Tensor, ty: str, nbytes: int, pool, rng, index: int):
        self.t, self.ty, self.nbytes, self.pool, self.rng, self.index = t, ty, nbytes, pool, rng, index

    def tofile(self, fout) -> None:
        import numpy as np

        if self.pool is None:
            n = self.t.n_elements
            if self.t.role == "norm":
                vals = np.ones(n, np.float32)
            else:
                vals = self.rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
            data = vals.astype(np.float32 if self.ty == "F32" else np.float16)
            if data.nbytes != self.nbytes:
                raise RuntimeError(f"{self.t.name}: {data.nbytes} bytes, planned {self.nbytes}")
            data.tofile(fout)
            return
        block = ggml_types.get(self.ty).block_bytes
        view = memoryview(self.pool)
        start = (self.index * 7919 % (len(self.pool) // block)) * block
        left = self.nbytes
        while left:
            chunk = view[start : start + left]
            fout.write(chunk)
            left -= len(chunk)
            start = 0
