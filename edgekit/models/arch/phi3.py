"""Phi-3 / Phi-3.5 / Phi-4 (dense): q, k and v fused into one attn_qkv projection and the MLP's
gate and up fused into one ffn_up twice the MLP width, as both the HF checkpoint and llama.cpp
store them.

GGUF (llama.cpp's PHI3 graph): RoPE is NEOX-style (rotate_half), so q/k rows are written as
HF stores them. llama.cpp's converter states the RoPE dimension count (partial_rotary_factor
of the hidden size, per head), the original context length and the sliding window (0 when the
config has none; llama.cpp's PHI3 graph then ignores it). A long-RoPE config (`longrope`, or
its older name `su`) adds the attention factor and two F32 vectors, `rope_factors_long` and
`rope_factors_short` (rope dims / 2 each), which llama.cpp picks by the context size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata, Tensor, block_tensor, f32_decimal

_LONG_ROPE = ("longrope", "su")
_ROPE_FACTORS = ("rope_factors_long.weight", "rope_factors_short.weight")


class Phi3(ArchFamily, model_types=("phi3",)):
    hf_class = "Phi3ForCausalLM"
    producers = frozenset({"gguf", "llm-compressor"})
    gguf_arch = "PHI3"
    gguf_names = ("phi3",)
    gguf_slides = False  # llama.cpp disables Phi-3's sliding window ("Phi SWA is currently disabled")
    gguf_rope_scaling = _LONG_ROPE
    gguf_vocab = "phi3"  # Phi-3/3.5: tokenizer.model; Phi-4: GPT2Tokenizer (BPE)
    ct_awq_mappings = "Phi3ForCausalLM"  # llm-compressor's pairs for the fused qkv / gate_up
    gguf_importable = True
    # the fused projections keep their HF names
    hf_tensor_names = MappingProxyType(
        {
            **ArchFamily.hf_tensor_names,
            "blk.{i}.attn_qkv.weight": "model.layers.{i}.self_attn.qkv_proj.weight",
            "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.gate_up_proj.weight",
        }
    )
    gguf_config_tensors = _ROPE_FACTORS

    def arch_fields(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        long = _rope_params(cfg).get("long_factor")
        return {"rope_factors": len(long)} if isinstance(long, list) and long else {}

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        fields = super().from_gguf_metadata(m)
        shape = m.shape(_ROPE_FACTORS[0])
        return fields | ({"rope_factors": shape[0]} if shape else {})

    def tensors(self, a: Arch) -> list[Tensor]:
        factors = [Tensor(name, (a.rope_factors,), "norm") for name in _ROPE_FACTORS]
        return super().tensors(a) + (factors if a.rope_factors else [])

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        h = a.hidden
        qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
        return [
            block_tensor(i, "attn_norm.weight", (h,), "norm"),
            block_tensor(i, "attn_qkv.weight", (h, qkv), "attn"),
            block_tensor(i, "attn_output.weight", (a.n_heads * a.head_dim, h), "attn"),
        ]

    def dense_mlp(self, a: Arch, i: int) -> list[Tensor]:
        h = a.hidden
        return [
            block_tensor(i, "ffn_up.weight", (h, 2 * a.ffn), "ffn"),
            block_tensor(i, "ffn_down.weight", (a.ffn, h), "ffn"),
        ]

    # ---- GGUF converter -------------------------------------------------------------------

    def gguf_config_metadata(self, a: Arch, cfg: Mapping[str, Any]) -> dict[str, int | float]:
        rp = _rope_params(cfg)
        out: dict[str, int | float] = {
            "rope.dimension_count": _rope_dims(a, cfg),
            "attention.sliding_window": int(cfg.get("sliding_window") or 0),
        }
        orig = _original_context(cfg)
        if orig:
            out["rope.scaling.original_context_length"] = orig
        if rp.get("long_factor"):
            out["rope.scaling.attn_factor"] = _long_rope_attn_factor(a, cfg)
        return out

    def gguf_extra_tensors(self, a: Arch, cfg: Mapping[str, Any]) -> dict[str, list[float]]:
        rp = _rope_params(cfg)
        long, short = rp.get("long_factor"), rp.get("short_factor")
        if not long:
            return {}
        half = _rope_dims(a, cfg) // 2
        if (
            not isinstance(short, list)
            or not isinstance(long, list)
            or len(long) != half
            or len(short) != half
        ):
            raise EdgekitError(
                "rope_scaling: long_factor and short_factor must both list rope dims / 2 "
                f"= {half} numbers for {a.family}"
            )
        return {
            "rope_factors_long.weight": [float(x) for x in long],
            "rope_factors_short.weight": [float(x) for x in short],
        }

    # ---- GGUF import ----------------------------------------------------------------------

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        """The inverse of gguf_config_metadata / gguf_extra_tensors: the partial rotary factor
        from the RoPE dims, the original context, the sliding window (0: none) and, with the
        factor vectors, the long-RoPE scaling."""
        cfg = super().hf_config(a, m, vectors)
        rp: dict[str, Any] = dict(cfg["rope_parameters"])
        rope_dims = m.uint("rope.dimension_count", 0) or a.head_dim
        rp["partial_rotary_factor"] = f32_decimal(rope_dims * a.n_heads / a.hidden)
        orig = m.uint("rope.scaling.original_context_length", 0)
        long, short = (vectors.get(n) for n in _ROPE_FACTORS)
        if long and short:
            if not orig:
                raise m.error(
                    "rope.scaling.original_context_length", "missing (needed with rope_factors_long)"
                )
            rp |= {
                "rope_type": "longrope",
                "long_factor": [f32_decimal(x) for x in long],
                "short_factor": [f32_decimal(x) for x in short],
            }
        if orig:
            cfg["original_max_position_embeddings"] = orig
            if long and short:  # read with the factors only (a default RoPE names no context)
                rp["original_max_position_embeddings"] = orig
        cfg["rope_parameters"] = rp
        cfg["sliding_window"] = m.uint("attention.sliding_window", 0) or None
        cfg.pop("head_dim", None)  # Phi3Config derives it (hidden / heads)
        cfg.pop("attention_bias", None)
        return cfg


def _rope_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return dict(rp) if isinstance(rp, dict) else {}


def _rope_kind(cfg: Mapping[str, Any]) -> str:
    rp = _rope_params(cfg)
    return str(rp.get("rope_type") or rp.get("type") or "default").lower()


def _rope_dims(a: Arch, cfg: Mapping[str, Any]) -> int:
    rot = _rope_params(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    return int(float(rot) * a.hidden) // a.n_heads


def _original_context(cfg: Mapping[str, Any]) -> int:
    rp = _rope_params(cfg)
    return int(rp.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or 0)


def _long_rope_attn_factor(a: Arch, cfg: Mapping[str, Any]) -> float:
    kind, orig = _rope_kind(cfg), _original_context(cfg)
    if kind not in _LONG_ROPE:
        raise EdgekitError(f"RoPE scaling '{kind}' with long/short factors is not supported for {a.family}")
    if not orig:
        raise EdgekitError(f"{a.family}: long-RoPE needs original_max_position_embeddings in config.json")
    scale = a.max_context / orig
    # llama.cpp's converter: sqrt(1 + ln(scale) / ln(original context)) when the context grows
    return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
