"""Llama 4 (llama4, and llama4_text for a text-only checkpoint): a MoE with one shared
expert beside the routed ones, top-1 routing, and chunked local attention.

Config: the released checkpoints are multimodal wrappers whose language model sits in
text_config. Every MoE block has a shared expert as wide as a routed one (transformers'
Llama4TextMoe; the config has no key for it). Three of every four layers use RoPE and attend
within `attention_chunk_size` tokens; the others (zeros in `no_rope_layers`) are global, so
the KV cache is planned as a sliding window of the chunk size with that layer pattern. The
q/k norm (`use_qk_norm`) is a weightless L2 norm, so it adds no tensors.

Only the all-MoE layout (`interleave_moe_layer_step` 1, Llama-4 Scout) is modelled:
Maverick interleaves dense and MoE layers, which `Arch` cannot state yet, and its config is
refused rather than sized wrongly. Planned and sized; no producer is tested on it yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models.arch.base import Arch, ArchFamily, Tensor

_QK_NORMS = ("attn_q_norm.weight", "attn_k_norm.weight")


class Llama4(ArchFamily, model_types=("llama4", "llama4_text")):
    hf_class = "Llama4ForConditionalGeneration"
    qk_norm = True  # Scout's use_qk_norm (weightless, see attention())
    config_defaults = MappingProxyType({"n_shared_experts": 1})

    def unwrap_text_config(self, cfg: Mapping[str, Any], text: Mapping[str, Any]) -> dict[str, Any]:
        inner = {**super().unwrap_text_config(cfg, text), "model_type": self.name}
        # Llama4Config does not tie the embedding (the wrapper states false)
        inner["tie_word_embeddings"] = bool(
            text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        )
        return inner

    def normalize_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        out = {**super().normalize_config(cfg), "model_type": self.name}
        step = out.get("interleave_moe_layer_step", 1)
        if step != 1:
            raise EdgekitError(
                f"Llama-4 with interleave_moe_layer_step {step} (dense and MoE layers interleaved, "
                "as in Maverick) is not modelled yet",
                "only the all-MoE layout (Llama-4 Scout) is planned and sized",
            )
        chunk = out.get("attention_chunk_size")
        nope = out.get("no_rope_layers")
        if isinstance(chunk, int) and chunk and "sliding_window" not in out:
            out["sliding_window"] = chunk
            if isinstance(nope, list) and nope and 0 in nope:
                out.setdefault("sliding_window_pattern", len(nope) // nope.count(0))
        return out

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        # use_qk_norm is an L2 norm without weights: no attn_q_norm / attn_k_norm tensors
        return [t for t in super().attention(a, i) if not t.name.endswith(_QK_NORMS)]
