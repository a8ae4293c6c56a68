"""DeepSeek-V2 and -V3: multi-head latent attention (MLA) and a MoE block with shared
experts after `first_k_dense_replace` dense layers.

MLA: q through a low-rank pair (q_a, its norm, q_b; V2-Lite has no q_lora_rank and a plain
attn_q), k/v through one compressed latent (kv_a_mqa holding the latent and the decoupled
RoPE key, its norm, kv_b). The KV cache holds the latent and the RoPE key (`Arch`).
V3 routes with a learned per-expert bias (exp_probs_b). Planned and sized; no producer is
tested on them yet.
"""

from __future__ import annotations

from edgekit.models.arch.base import Arch, ArchFamily, Tensor, block_tensor


class DeepseekV2(ArchFamily, model_types=("deepseek_v2",)):
    hf_class = "DeepseekV2ForCausalLM"

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
