"""Per-tensor ggml types of llama.cpp's quantization mixes (Q4_K_M and friends).

Our own implementation of the rules llama.cpp applies in `llama-quantize` (src/llama-quant.cpp):
which tensors are quantized at all, which get more bits in the _S/_M/_L mixes, and the
fallback when a row length is not a multiple of the type's block. The planner uses it to
size files; the GGUF writer uses it to choose what to write, so both agree with llama.cpp.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types
from edgekit.models.arch import Arch, Tensor, arch_family

# default type of each mix (what most 2-D weights get); llama_ftype_get_default_type
MIX_DEFAULT = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K",
    "Q5_K_S": "Q5_K",
    "Q4_K_M": "Q4_K",
    "Q4_K_S": "Q4_K",
    "Q3_K_L": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_S": "Q3_K",
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
}
_UNQUANTIZED = ("F32", "F16", "BF16")

# fallback when the row length is not a multiple of the chosen type's block size
_FALLBACK = {
    "IQ1_S": "IQ4_NL",
    "IQ1_M": "IQ4_NL",
    "IQ2_XXS": "IQ4_NL",
    "IQ2_XS": "IQ4_NL",
    "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL",
    "IQ3_S": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0",
    "Q3_K": "Q4_0",
    "TQ1_0": "Q4_0",
    "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}

# substrings that keep a weight out of quantization (routers, position tables, ...)
_NEVER_QUANTIZED = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "attn_rel_b.weight",
    ".position_embd",
)


def mixes() -> list[str]:
    return list(MIX_DEFAULT)


def is_quantizable(t: Tensor) -> bool:
    """llama.cpp quantizes weights of 2+ dimensions except norms, routers and position tables."""
    dims = len(t.shape)
    while dims > 1 and t.shape[dims - 1] == 1:
        dims -= 1  # ggml counts trailing size-1 dimensions out
    if dims < 2 or not t.name.endswith("weight"):
        return False
    if t.name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(s in t.name for s in _NEVER_QUANTIZED)


def processing_order(tensors: Sequence[Tensor]) -> list[Tensor]:
    """llama.cpp's order: non-block tensors by name, then blocks by number, each by name."""

    def key(t: Tensor):
        m = re.match(r"blk\.(\d+)\.", t.name)
        return (int(m.group(1)) if m else -1, t.name.encode())

    return sorted(tensors, key=key)


def _block_number(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    if m is None:
        raise ValueError(f"{name} is not a block tensor")
    return int(m.group(1))


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in (
        ("attn_qkv.weight", "attn_v"),
        ("attn_kv_b.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if needle in name:
            return cat
    return "other"


def assign_types(
    tensors: Sequence[Tensor],
    mix: str,
    arch: Arch,
    overrides: Sequence[tuple[str, str]] = (),
    has_imatrix: bool = False,
) -> dict[str, str]:
    """Map every tensor name to the ggml type llama.cpp would write for `mix`."""
    mix = mix.upper()
    if mix not in MIX_DEFAULT:
        raise EdgekitError(f"unknown GGUF type '{mix}'", f"choose one of {', '.join(MIX_DEFAULT)}")
    default = MIX_DEFAULT[mix]
    compiled = [(re.compile(p), ty.upper()) for p, ty in overrides]
    st = _State(
        tied=not any(t.name == "output.weight" for t in tensors),
        n_attn_v=sum(1 for t in tensors if _category(t.name) == "attn_v"),
        n_layers=arch.n_layers,
        n_expert=arch.n_experts,
        gqa=arch.n_gqa,
        is_70b=arch_family(arch).gguf_mix_is_70b(arch),
        has_imatrix=has_imatrix,
    )
    out: dict[str, str] = {}
    for t in processing_order(tensors):
        if not is_quantizable(t):
            out[t.name] = "F32"
            continue
        if default in _UNQUANTIZED:
            out[t.name] = default
            continue
        forced = next((ty for rx, ty in compiled if rx.search(t.name)), None)
        ty = forced if forced else _rule(t, mix, default, st)
        out[t.name] = _fit_rows(t, ty)
    return out


@dataclass
class _State:
    tied: bool
    n_attn_v: int
    n_layers: int
    n_expert: int
    gqa: int
    is_70b: bool
    has_imatrix: bool
    i_attn_v: int = 0  # attn_v tensors seen so far
    i_ffn_down: int = 0


def _fit_rows(t: Tensor, ty: str) -> str:
    ncols = t.shape[0]
    if ncols % ggml_types.get(ty).block == 0:
        return ty
    fb = _FALLBACK.get(ty)
    if fb is None:
        if ggml_types.get(ty).block > 32:
            raise EdgekitError(f"{t.name}: no fallback type for {ty} with rows of {ncols}")
        fb = ty
    return fb if ncols % ggml_types.get(fb).block == 0 else "F16"


def _rule(t: Tensor, mix: str, ty: str, st: _State) -> str:
    cat = _category(t.name)
    if cat == "output" or (st.tied and cat == "token_embd"):
        if t.shape[0] % ggml_types.get(ty).block:
            return "Q8_0"
        return ty if ty == "Q8_0" else "Q6_K"
    if cat == "token_embd":
        return ty
    if cat == "attn_v":
        i = st.i_attn_v
        st.i_attn_v += 1
        if mix == "Q2_K":
            ty = "Q4_K" if st.gqa >= 4 else "Q3_K"
        elif mix == "Q2_K_S" and st.gqa >= 4:
            ty = "Q4_K"
        elif mix == "Q3_K_M":
            ty = "Q5_K" if i < 2 else "Q4_K"
        elif mix == "Q3_K_L":
            ty = "Q5_K"
        elif mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, st.n_attn_v):
            ty = "Q6_K"
        elif mix == "Q4_K_S" and i < 4:
            ty = "Q5_K"
        if st.is_70b and ty in ("Q3_K", "Q4_K"):
            ty = "Q5_K"
        if st.n_expert == 8:
            ty = "Q8_0"
        return ty
    if cat == "attn_k":
        return "Q8_0" if st.n_expert == 8 else ty
    if cat == "ffn_down":
        i, n = st.i_ffn_down, st.n_layers
        st.i_ffn_down += 1
        if st.n_expert > 1:
            i = t.layer if t.layer >= 0 else _block_number(t.name)
        if mix == "Q2_K":
            return "Q3_K"
        if mix == "Q2_K_S":
            return "Q4_K" if i < n // 8 else ty
        if mix == "Q3_K_M":
            return "Q5_K" if i < n // 16 else "Q4_K"
        if mix == "Q3_K_L":
            return "Q5_K"
        if mix == "Q4_K_M":
            return "Q6_K" if _use_more_bits(i, n) else ty
        if mix == "Q5_K_M" and _use_more_bits(i, n):
            return "Q6_K"
        if mix == "Q4_K_S" and i < n // 8:
            return "Q5_K"
        if mix in ("Q4_0", "Q5_0") and st.has_imatrix and i < n // 8:
            return "Q4_1" if mix == "Q4_0" else "Q5_1"
        return ty
    if cat == "attn_output":
        if st.n_expert == 8:
            return "Q5_K" if mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M") else ty
        return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(mix, ty)
    return ty
