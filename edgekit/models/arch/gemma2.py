"""Gemma 2 (gemma2): the Gemma 3 block without its q/k norms.

Config: official configs state head_dim (256 for 9B, 128 for 27B, not hidden/heads) and a
4096-token sliding window, but not the layer pattern: transformers' Gemma2 alternates
sliding (even layers) and global (odd layers) attention, a pattern of 2; the embedding is
tied unless stated. Tensors: a norm after attention and after the MLP in every block.
Planned and sized; no producer is tested on it yet.
"""

from __future__ import annotations

from types import MappingProxyType

from edgekit.models.arch.base import Arch, ArchFamily, Tensor, block_tensor


class Gemma2(ArchFamily, model_types=("gemma2",)):
    hf_class = "Gemma2ForCausalLM"
    tied_default = True
    config_defaults = MappingProxyType({"sliding_window_pattern": 2})

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        post = block_tensor(i, "post_attention_norm.weight", (a.hidden,), "norm")
        return [*super().attention(a, i), post]

    def mlp(self, a: Arch, i: int) -> list[Tensor]:
        return [*super().mlp(a, i), block_tensor(i, "post_ffw_norm.weight", (a.hidden,), "norm")]
