"""DBRX (dbrx): a fine-grained MoE (16 experts, 4 per token, no shared expert) with fused
q/k/v attention and weight-only LayerNorms.

Config: DBRX nests its attention and MoE facts (`attn_config.kv_n_heads`,
`ffn_config.ffn_hidden_size`, `ffn_config.moe_num_experts`, `ffn_config.moe_top_k`) and names
the rest its own way (`d_model`, `n_layers`, `n_heads`, `max_seq_len`); the reader maps them
onto the common keys. Tensors, named as llama.cpp's DBRX graph names them: attn_qkv,
attn_output, attn_output_norm (the second norm) and the stacked experts. Planned and sized;
no producer is tested on it yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, Tensor, block_tensor

# DBRX key -> the common key the config reader reads
_TOP = {
    "d_model": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "max_seq_len": "max_position_embeddings",
}
_ATTN = {"kv_n_heads": "num_key_value_heads", "rope_theta": "rope_theta"}
_FFN = {
    "ffn_hidden_size": "moe_intermediate_size",
    "moe_num_experts": "num_local_experts",
    "moe_top_k": "num_experts_per_tok",
}


class Dbrx(ArchFamily, model_types=("dbrx",)):
    hf_class = "DbrxForCausalLM"

    def normalize_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        out = super().normalize_config(cfg)
        for section, keys in ((out, _TOP), (cfg.get("attn_config"), _ATTN), (cfg.get("ffn_config"), _FFN)):
            if isinstance(section, Mapping):
                for theirs, ours in keys.items():
                    if theirs in section:
                        out.setdefault(ours, section[theirs])
        return out

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        h = a.hidden
        qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
        return [
            block_tensor(i, "attn_norm.weight", (h,), "norm"),
            block_tensor(i, "attn_qkv.weight", (h, qkv), "attn"),
            block_tensor(i, "attn_output.weight", (a.n_heads * a.head_dim, h), "attn"),
        ]

    def mlp(self, a: Arch, i: int) -> list[Tensor]:
        norm = block_tensor(i, "attn_output_norm.weight", (a.hidden,), "norm")
        return [norm, *self.moe_mlp(a, i)]
