"""DeepSeek-V2 and -V3: multi-head latent attention (MLA) and a MoE block with shared
experts after `first_k_dense_replace` dense layers.

MLA: q through a low-rank pair (q_a, its norm, q_b; V2-Lite has no q_lora_rank and a plain
attn_q), k/v through one compressed latent (kv_a_mqa holding the latent and the decoupled
RoPE key, its norm, kv_b). The KV cache holds the latent and the RoPE key (`Arch`).
V3 routes with a learned per-expert bias (exp_probs_b). Planned and sized; no producer is
tested on them yet.
"""

from __future__ import annotations

from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata, Tensor, block_tensor


class DeepseekV2(ArchFamily, model_types=("deepseek_v2",)):
    hf_class = "DeepseekV2ForCausalLM"
    gguf_names = ("deepseek2",)  # V2 and V3 alike

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        fields = super().from_gguf_metadata(m)
        kv_lora = m.uint("attention.kv_lora_rank", 0)
        if kv_lora:
            # current llama.cpp states the latent's sizes in key/value_length and the
            # per-head sizes in key/value_length_mla; older files have only the latter's
            # values, in key/value_length
            rope = m.uint("rope.dimension_count")
            qk_head = m.uint("attention.key_length_mla", 0) or m.uint("attention.key_length")
            v_head = m.uint("attention.value_length_mla", 0) or m.uint("attention.value_length")
            if qk_head <= rope:
                raise m.error("attention.key_length_mla", f"{qk_head} is not above the RoPE part ({rope})")
            fields.update(
                q_lora_rank=m.uint("attention.q_lora_rank", 0),
                kv_lora_rank=kv_lora,
                qk_nope_head_dim=qk_head - rope,
                qk_rope_head_dim=rope,
                v_head_dim=v_head,
                head_dim=qk_head,
                # every query head has its own key and value (the file may say 1: the latent)
                n_kv_heads=fields["n_heads"],
            )
        # V3 routes with a learned per-expert bias
        if m.has_tensor(f"blk.{fields['first_dense_layers']}.exp_probs_b.bias"):
            fields["family"] = "deepseek_v3"
        return fields

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        if not a.uses_mla:
            return super().attention(a, i)
        h = a.hidden
        qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
        ts = [block_tensor(i, "attn_norm.weight", (h,), "norm")]
        if a.q_lora_rank:
            ts += [
                block_tensor(i, "attn_q_a.weight", (h, a.q_lora_rank), "attn"),
                block_tensor(i, "attn_q_a_norm.weight", (a.q_lora_rank,), "norm"),
                block_tensor(i, "attn_q_b.weight", (a.q_lora_rank, a.n_heads * qk_head), "attn"),
            ]
        else:
            ts.append(block_tensor(i, "attn_q.weight", (h, a.n_heads * qk_head), "attn"))
        kv_b = (a.kv_lora_rank, a.n_heads * (a.qk_nope_head_dim + a.v_head_dim))
        return [
            *ts,
            block_tensor(i, "attn_kv_a_mqa.weight", (h, a.kv_lora_rank + a.qk_rope_head_dim), "attn"),
            block_tensor(i, "attn_kv_a_norm.weight", (a.kv_lora_rank,), "norm"),
            block_tensor(i, "attn_kv_b.weight", kv_b, "attn"),
            block_tensor(i, "attn_output.weight", (a.n_heads * a.v_head_dim, h), "attn"),
        ]


class DeepseekV3(DeepseekV2, model_types=("deepseek_v3",)):
    hf_class = "DeepseekV3ForCausalLM"

    def router(self, a: Arch, i: int) -> list[Tensor]:
        bias = block_tensor(i, "exp_probs_b.bias", (a.n_experts,), "bias")
        return [*super().router(a, i), bias]
