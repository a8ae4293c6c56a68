"""Llama (and Mistral, the same graph): the layout every other family starts from.

GGUF: llama.cpp's LLAMA graph rotates interleaved RoPE pairs while HF checkpoints order each
head's q/k rows for rotate_half, so the converter reorders those rows; LLAMA files also state
the RoPE dimension count. llama.cpp counts an 80-layer GQA Llama (not an 8-expert one) as its
70B type, which gets more bits in attn_v. A LLAMA GGUF with experts is a Mixtral.
"""

from __future__ import annotations

from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata


class Llama(ArchFamily, model_types=("llama",)):
    hf_class = "LlamaForCausalLM"
    producers = frozenset({"gguf", "llm-compressor", "onnx"})
    gguf_arch = "LLAMA"
    gguf_slides = False  # llama.cpp's LLAMA graph reads no sliding window (Mistral's is ignored)
    gguf_vocab = "llama"  # Llama 2, Mistral, Mixtral: tokenizer.model; Llama 3, SmolLM: BPE
    gguf_importable = True

    def gguf_unpermute_heads(self, a: Arch, gguf_name: str) -> int | None:
        if not gguf_name.endswith(".weight"):
            return None
        if ".attn_q." in gguf_name:
            return a.n_heads
        if ".attn_k." in gguf_name:
            return a.n_kv_heads
        return None

    def gguf_metadata(self, a: Arch) -> dict[str, int]:
        return {"rope.dimension_count": a.head_dim}

    def gguf_mix_is_70b(self, a: Arch) -> bool:
        return a.n_experts != 8 and a.n_layers == 80 and a.n_heads != a.n_kv_heads

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        # llama.cpp writes Mixtral (and Mistral) as LLAMA files: experts make it a Mixtral
        fields = super().from_gguf_metadata(m)
        if fields["n_experts"]:
            fields["family"] = "mixtral"
        return fields


class Mistral(Llama, model_types=("mistral",)):
    """Mistral's dense models are Llamas with a sliding window; the ONNX export is not tested
    on them."""

    hf_class = "MistralForCausalLM"
    producers = frozenset({"gguf", "llm-compressor"})
