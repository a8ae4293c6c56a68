"""Mixtral: Llama attention with 8 full-width experts per layer (the config has no
moe_intermediate_size; the experts are intermediate_size wide, which the config reader
falls back to). llama.cpp's mix rules give 8-expert models more bits in attn_v / attn_k /
attn_output, which follows from n_experts alone. edgekit has no converter for its
block_sparse_moe layout yet; it is planned and sized."""

from __future__ import annotations

from edgekit.models.arch.base import ArchFamily


class Mixtral(ArchFamily, model_types=("mixtral",)):
    hf_class = "MixtralForCausalLM"
