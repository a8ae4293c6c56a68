"""Mixtral: Llama attention with 8 full-width experts per layer (the config has no
moe_intermediate_size; the experts are intermediate_size wide, which the config reader
falls back to). llama.cpp's mix rules give 8-expert models more bits in attn_v / attn_k /
attn_output, which follows from n_experts alone.

GGUF: llama.cpp writes Mixtral as a LLAMA file with experts, so everything Llama's family
says holds (q/k rows reordered for interleaved RoPE, `rope.dimension_count`, the 70B rule
that skips 8-expert models); the expert count and experts used per token come from
num_local_experts / num_experts_per_tok. HF stores each expert's projections under
`block_sparse_moe.experts.{e}.w1|w2|w3` (gate, down, up); the converter stacks them, expert
by expert, into ffn_gate_exps / ffn_down_exps / ffn_up_exps, and the router
`block_sparse_moe.gate` becomes ffn_gate_inp.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata
from edgekit.models.arch.llama import Llama

# the router and experts under HF's block_sparse_moe names (w1 gate, w3 up, w2 down)
_MOE_NAMES = {
    "blk.{i}.ffn_gate_inp.weight": "model.layers.{i}.block_sparse_moe.gate.weight",
    "blk.{i}.ffn_gate_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight",
    "blk.{i}.ffn_up_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight",
    "blk.{i}.ffn_down_exps.weight": "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight",
}


class Mixtral(Llama, model_types=("mixtral",)):
    hf_class = "MixtralForCausalLM"
    producers = frozenset({"gguf", "llm-compressor"})
    # llm-compressor lists no Mixtral pairs (it would fall back to dense Llama's, smoothing the
    # norm before the experts without compensating the router); its MoE pairs balance the
    # router with the experts' gate/up, the router's transformers 5 name being mlp.gate
    ct_awq_mappings = "Qwen3MoeForCausalLM"
    hf_expert_pattern = (
        r"^model\.layers\.(?P<layer>\d+)\.block_sparse_moe\.experts\.(?P<expert>\d+)\.w[123]\.weight$"
    )
    hf_tensor_names = MappingProxyType({**ArchFamily.hf_tensor_names, **_MOE_NAMES})

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        cfg = super().hf_config(a, m, vectors)
        for key in ("num_experts", "moe_intermediate_size", "shared_expert_intermediate_size"):
            cfg.pop(key, None)
        # the experts are intermediate_size wide; llama.cpp's graph reads no sliding window
        return cfg | {
            "num_local_experts": a.n_experts,
            "intermediate_size": a.expert_ffn,
            "sliding_window": None,
        }
