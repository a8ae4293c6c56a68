"""Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3 attention (q/k norms) and a routed
MoE block in every layer (moe_intermediate_size wide experts, no shared expert). HF stores
each expert's projections separately (mlp.experts.{e}.*); the GGUF converter stacks them
into ffn_*_exps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata


class Qwen3Moe(ArchFamily, model_types=("qwen3_moe",)):
    qk_norm = True
    hf_class = "Qwen3MoeForCausalLM"
    producers = frozenset({"gguf", "llm-compressor", "onnx", "synthetic"})
    gguf_arch = "QWEN3MOE"
    gguf_importable = True

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        # llama.cpp's QWEN3MOE graph always renormalises the top-k routing weights
        return {**super().hf_config(a, m, vectors), "norm_topk_prob": True}
