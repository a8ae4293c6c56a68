"""Per-tensor ggml types of llama.cpp's quantization mixes (Q4_K_M and friends).

Our own implementation of the rules llama.cpp applies in `llama-quantize` (src/llama-quant.cpp):
which tensors are quantized at all, which get more bits in the _S/_M/_L mixes, and the
fallback when a row length is not a multiple of the type's block. The planner uses it to
size files; the GGUF writer uses it to choose what to write, so both agree with llama.cpp.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edgekit.errors import EdgekitError
from edgekit.models.arch import Arch, Tensor
from edgekit.quantize import ggml_types

# default type of each mix (what most 2-D weights get)
MIX_DEFAULT = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K",
    "Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q3_K_L": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_S": "Q3_K",
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K",
}  # fmt: skip

# fallback when the row length is not a multiple of the chosen type's block size
_FALLBACK = {
    "Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL",
    "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
}  # fmt: skip


def mixes() -> list[str]:
    return list(MIX_DEFAULT)


def is_quantizable(t: Tensor) -> bool:
    """llama.cpp quantizes 2-D+ weights except norms, routers and position tables."""
    name = t.name
    if not name.endswith(".weight") or len(t.shape) < 2:
        return False
    if "_norm.weight" in name or name.endswith("norm.weight"):
        return False
    return "ffn_gate_inp.weight" not in name and "pos_embd" not in name


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def assign_types(
    tensors: Sequence[Tensor],
    mix: str,
    arch: Arch,
    overrides: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """Map every tensor name to the ggml type llama.cpp would write for `mix`."""
    mix = mix.upper()
    if mix not in MIX_DEFAULT:
        raise EdgekitError(f"unknown GGUF type '{mix}'", f"choose one of {', '.join(MIX_DEFAULT)}")
    default = MIX_DEFAULT[mix]
    compiled = [(re.compile(p), ty.upper()) for p, ty in overrides]
    # llama.cpp walks tensors in name order (its weights map is sorted); counters follow that order
    ordered = sorted(tensors, key=lambda t: t.name)
    has_output = any(t.name == "output.weight" for t in tensors)
    n_attn_v = sum(1 for t in tensors if "attn_v.weight" in t.name or "attn_qkv.weight" in t.name)
    n_ffn_down = sum(1 for t in tensors if "ffn_down" in t.name and t.name.endswith(".weight"))
    state = {"attn_v": 0, "ffn_down": 0}
    out: dict[str, str] = {}
    for t in ordered:
        if not is_quantizable(t):
            out[t.name] = "F32"
            continue
        if default in ("F32", "F16", "BF16"):
            ty = default
        else:
            ty = _rule(t, mix, default, arch, has_output, n_attn_v, n_ffn_down, state)
        for rx, forced in compiled:
            if rx.search(t.name):
                ty = forced
                break
        out[t.name] = _fit_rows(t, ty)
    return out


def _fit_rows(t: Tensor, ty: str) -> str:
    if t.shape[0] % ggml_types.get(ty).block == 0:
        return ty
    fb = _FALLBACK.get(ty)
    if fb is None or t.shape[0] % ggml_types.get(fb).block:
        return "F16"
    return fb


def _rule(t: Tensor, mix: str, ty: str, arch: Arch, has_output: bool, n_attn_v: int, n_ffn_down: int, st) -> str:
    name = t.name
    n_expert = arch.n_experts
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        if t.shape[0] % 256:
            return "Q8_0"
        return ty if ty == "Q8_0" else "Q6_K"
    if name == "token_embd.weight":
        return ty
    if "attn_v.weight" in name:
        i = st["attn_v"]
        st["attn_v"] += 1
        if mix == "Q2_K":
            ty = "Q4_K" if arch.n_gqa >= 4 else "Q3_K"
        elif mix == "Q3_K_M":
            ty = "Q5_K" if i < 2 else "Q4_K"
        elif mix == "Q3_K_L":
            ty = "Q5_K"
        elif mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n_attn_v):
            ty = "Q6_K"
        elif mix == "Q4_K_S" and i < 4:
            ty = "Q5_K"
        if n_expert == 8:
            ty = "Q8_0"
        return ty
    if "attn_k.weight" in name:
        return "Q8_0" if n_expert == 8 else ty
    if "ffn_down" in name:
        i = st["ffn_down"]
        st["ffn_down"] += 1
        n = n_ffn_down
        if n_expert > 1:
            i, n = t.layer, arch.n_layers
        if mix == "Q2_K":
            return "Q3_K"
        if mix == "Q3_K_M":
            return "Q5_K" if i < n // 16 else "Q4_K" if _use_more_bits(i, n) or True else "Q3_K"
        if mix == "Q3_K_L":
            return "Q5_K"
        if mix in ("Q4_K_M", "Q5_K_M"):
            return "Q6_K" if _use_more_bits(i, n) else ty
        if mix == "Q4_K_S" and i < n // 8:
            return "Q5_K"
        return ty
    if "attn_output.weight" in name:
        if n_expert == 8:
            if mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                return "Q5_K"
            return ty
        if mix == "Q2_K":
            return "Q3_K"
        if mix == "Q3_K_M":
            return "Q4_K"
        if mix == "Q3_K_L":
            return "Q5_K"
        return ty
    if "attn_qkv.weight" in name:
        if mix in ("Q3_K_M", "Q3_K_L"):
            return "Q4_K"
        if mix == "Q4_K_M":
            return "Q5_K"
        if mix == "Q5_K_M":
            return "Q6_K"
        return ty
    return ty
