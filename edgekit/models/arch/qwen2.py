"""Qwen2 / Qwen2.5: a Llama layout with biases on q, k and v (always, whatever the config's
attention_bias says). llama.cpp counts an 80-layer Qwen2 as its 70B type (Qwen2-72B)."""

from __future__ import annotations

from edgekit.models.arch.base import Arch, ArchFamily


class Qwen2(ArchFamily, model_types=("qwen2",)):
    qkv_bias = True
    hf_class = "Qwen2ForCausalLM"
    producers = frozenset({"gguf", "llm-compressor"})
    gguf_arch = "QWEN2"
    gguf_importable = True

    def gguf_mix_is_70b(self, a: Arch) -> bool:
        return a.n_layers == 80
