"""Qwen3 dense: a Llama layout with a per-head RMS norm on q and k and no q/k/v biases (the
config's attention_bias is ignored, as transformers' Qwen3 ignores it). head_dim is stated
by the config and is not hidden / heads (Qwen3-4B: 128, not 80)."""

from __future__ import annotations

from edgekit.models.arch.base import ArchFamily


class Qwen3(ArchFamily, model_types=("qwen3",)):
    qk_norm = True
    qkv_bias = False
    hf_class = "Qwen3ForCausalLM"
    producers = frozenset({"gguf", "llm-compressor", "onnx", "synthetic"})
    gguf_arch = "QWEN3"
    gguf_importable = True
