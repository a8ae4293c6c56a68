"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2 attention (q/k/v biases) with routed
experts and one shared expert (shared_expert_intermediate_size wide). edgekit has no GGUF
converter or other producer for it yet; it is planned and sized."""

from __future__ import annotations

from edgekit.models.arch.base import ArchFamily


class Qwen2Moe(ArchFamily, model_types=("qwen2_moe",)):
    qkv_bias = True
    hf_class = "Qwen2MoeForCausalLM"
    gguf_names = ("qwen2moe",)
