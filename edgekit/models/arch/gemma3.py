"""Gemma 3 (gemma3, and gemma3_text for the 1B text-only model): one architecture.

Config: the 4B+ models are multimodal wrappers whose language model sits in text_config,
and official configs leave several keys to transformers' Gemma3TextConfig defaults
(gemma-3-4b-it's text_config states neither its heads nor its vocabulary); the embedding is
tied unless stated. Tensors: q/k norms, and a norm after attention and after the MLP in
every block. Sliding-window attention: every 6th layer is global.

GGUF (llama.cpp's GEMMA3 graph; the text model only): Gemma's RMSNorm scales by 1 + weight,
llama.cpp's by the weight, so every norm is written plus one, as llama.cpp's converter does;
the graph itself scales the embedding by sqrt(hidden) and fixes the layer pattern at every
6th global, so a config whose layer_types say otherwise is refused. The keys beyond the
common ones are the sliding window, the sliding layers' RoPE base (rope.freq_base_swa, from
rope_parameters.sliding_attention or rope_local_base_freq) and a final-logit softcap when
the config has one. llama.cpp scales attention by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for
its 62-layer 27B) and writes no query_pre_attn_scalar: a config whose scalar differs is
refused. llama.cpp's converter drops token_embd rows beyond the tokenizer's tokens (its
tokenizer.json count); where that would leave fewer rows than vocabulary entries, llama.cpp
could not load the file, so edgekit refuses the checkpoint instead of writing it.

GGUF import (models/gguf_import.py) inverts all of it: the norms minus one (derived from
gguf_values), the four norms of a block under their HF names, a Gemma3TextConfig
(`gemma3_text`, Gemma3ForCausalLM) whose layer types follow llama.cpp's fixed pattern, with
both RoPE bases, the sliding window, the attention scale llama.cpp uses and the softcap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models.arch.base import Arch, ArchFamily, GGUFMetadata, Tensor, block_tensor, f32_decimal

_LLAMA_CPP_PATTERN = 6  # llama.cpp's GEMMA3 graph: layers 5, 11, ... attend globally


class Gemma3(ArchFamily, model_types=("gemma3", "gemma3_text")):
    hf_class = "Gemma3ForCausalLM"
    producers = frozenset({"gguf", "llm-compressor"})
    gguf_arch = "GEMMA3"
    gguf_vocab = "gemma"  # tokenizer.model (Gemma's SentencePiece), no space prefix
    tied_default = True
    qk_norm = True
    gguf_names = ("gemma3",)
    # llm-compressor: its Gemma 3 pairs leave the norm before q/k/v unsmoothed (q_norm and
    # k_norm follow those projections); the 4B+ wrappers' vision tower and projector stay BF16
    ct_awq_mappings = "Gemma3ForCausalLM"
    ct_keep_wide = (*ArchFamily.ct_keep_wide, r"re:.*vision_tower.*", r"re:.*multi_modal_projector.*")
    gguf_importable = True
    # the norms around attention and the MLP under Gemma's names (tied: no output.weight)
    hf_tensor_names = MappingProxyType(
        {
            **ArchFamily.hf_tensor_names,
            "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
            "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
            "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
        }
    )
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

    # ---- GGUF converter -------------------------------------------------------------------

    def gguf_values(self, a: Arch, gguf_name: str) -> Callable[[Any], Any] | None:
        return _plus_one if gguf_name.endswith("norm.weight") else None

    def gguf_config_metadata(self, a: Arch, cfg: Mapping[str, Any]) -> dict[str, int | float | bool]:
        out: dict[str, int | float | bool] = {}
        # llama.cpp's converter writes the window unless the config says every layer is
        # global (a pattern of 1); transformers' own configs name no pattern
        if cfg.get("sliding_window_pattern") != 1 and cfg.get("sliding_window"):
            out["attention.sliding_window"] = int(cfg["sliding_window"])
        if cfg.get("final_logit_softcapping"):
            out["final_logit_softcapping"] = float(cfg["final_logit_softcapping"])
        return out

    def gguf_check_config(self, a: Arch, cfg: Mapping[str, Any], checkpoint_dir: Path) -> None:
        if cfg.get("attn_logit_softcapping") is not None:
            raise EdgekitError("gemma3: attn_logit_softcapping is set, which llama.cpp's GEMMA3 graph lacks")
        layer_types = cfg.get("layer_types")
        if isinstance(layer_types, list) and layer_types:
            pattern = [(i + 1) % _LLAMA_CPP_PATTERN != 0 for i in range(len(layer_types))]
            if [t == "sliding_attention" for t in layer_types] != pattern:
                raise EdgekitError(
                    "gemma3: layer_types differ from every 6th layer global, the pattern llama.cpp fixes"
                )
        scalar = cfg.get("query_pre_attn_scalar", 256)
        expected = a.hidden / a.n_heads if a.n_layers == 62 else a.head_dim
        if scalar is not None and not math.isclose(float(scalar), float(expected)):
            raise EdgekitError(
                f"gemma3: query_pre_attn_scalar {scalar} is not {expected:g}, "
                "the attention scale llama.cpp's GEMMA3 graph uses"
            )
        n_tokens = _tokenizer_json_count(checkpoint_dir)
        if n_tokens is not None and n_tokens < a.vocab:
            raise EdgekitError(
                f"gemma3: llama.cpp keeps {n_tokens} token_embd rows (the tokenizer's tokens) "
                f"of a {a.vocab}-entry vocabulary; llama.cpp could not load that file"
            )

    # ---- GGUF import ----------------------------------------------------------------------

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        """The text model's Gemma3TextConfig: layer types as llama.cpp's graph fixes them
        (every 6th global; all global without a window), the global layers' RoPE (with its
        linear scaling) and the sliding layers' base, the attention scale and the softcap."""
        cfg = super().hf_config(a, m, vectors)
        window = m.uint("attention.sliding_window", 0)
        full = dict(cfg["rope_parameters"])
        local_theta = m.number("rope.freq_base_swa", 10000.0)
        layer_types = [
            "sliding_attention" if window and (i + 1) % _LLAMA_CPP_PATTERN else "full_attention"
            for i in range(a.n_layers)
        ]
        softcap = m.get("final_logit_softcapping")
        cfg.pop("attention_bias", None)
        return cfg | {
            "model_type": "gemma3_text",
            "sliding_window": window or None,
            "layer_types": layer_types,
            "rope_parameters": {
                "full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": f32_decimal(local_theta)},
            },
            "query_pre_attn_scalar": a.hidden // a.n_heads if a.n_layers == 62 else a.head_dim,
            "final_logit_softcapping": f32_decimal(float(softcap)) if softcap else None,
            "attn_logit_softcapping": None,
        }


def _plus_one(x: Any) -> Any:
    return x + 1.0


def _tokenizer_json_count(d: Path) -> int | None:
    """The token count llama.cpp's converter cuts token_embd to: tokenizer.json's vocabulary
    plus its added tokens (None with a SentencePiece tokenizer.model, which it pads to the
    vocabulary size instead)."""
    f = d / "tokenizer.json"
    if (d / "tokenizer.model").is_file() or not f.is_file():
        return None
    try:
        tok = json.loads(f.read_text(encoding="utf-8"))
        return len(tok["model"]["vocab"]) + len(tok.get("added_tokens") or [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgekitError(f"{f}: cannot read the vocabulary ({e})") from None
