"""Gemma 3 (gemma3, and gemma3_text for the 1B text-only model): one architecture.

Config: the 4B+ models are multimodal wrappers whose language model sits in text_config,
and official configs leave several keys to transformers' Gemma3TextConfig defaults
(gemma-3-4b-it's text_config states neither its heads nor its vocabulary); the embedding is
tied unless stated. Tensors: q/k norms, and a norm after attention and after the MLP in
every block. Sliding-window attention: every 6th layer is global. Planned and sized; no
producer is tested on it yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata, Tensor, block_tensor


class Gemma3(ArchFamily, model_types=("gemma3", "gemma3_text")):
    tied_default = True
    qk_norm = True
    gguf_names = ("gemma3",)
    config_defaults = MappingProxyType(
        {
            "vocab_size": 262208,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "max_position_embeddings": 131072,
            "rope_theta": 1000000.0,
            "sliding_window": 4096,
            "sliding_window_pattern": 6,
        }
    )

    def unwrap_text_config(self, cfg: Mapping[str, Any], text: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().unwrap_text_config(cfg, text), "model_type": self.name}

    def normalize_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        # gemma3_text and the wrapper's language model are one architecture: `gemma3`
        return {**super().normalize_config(cfg), "model_type": self.name}

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        # llama.cpp fixes Gemma 3's pattern (every 6th layer global) rather than writing it
        fields = super().from_gguf_metadata(m)
        if fields["sliding_window"] and not fields["sliding_window_pattern"]:
            fields["sliding_window_pattern"] = self.config_defaults["sliding_window_pattern"]
        return fields

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        post = block_tensor(i, "post_attention_norm.weight", (a.hidden,), "norm")
        return [*super().attention(a, i), post]

    def mlp(self, a: Arch, i: int) -> list[Tensor]:
        return [*super().mlp(a, i), block_tensor(i, "post_ffw_norm.weight", (a.hidden,), "norm")]
