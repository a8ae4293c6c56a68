"""Phi-3 / Phi-3.5 (dense): q, k and v fused into one attn_qkv projection and the MLP's gate
and up fused into one ffn_up twice the MLP width, as both the HF checkpoint and llama.cpp
store them. Planned and sized; no producer is tested on it yet."""

from __future__ import annotations

from edgekit.models.arch.base import Arch, ArchFamily, Tensor, block_tensor


class Phi3(ArchFamily, model_types=("phi3",)):
    hf_class = "Phi3ForCausalLM"
    gguf_names = ("phi3",)

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
