"""DeepSeek-V2 and -V3: multi-head latent attention (MLA) and a MoE block with shared
experts after `first_k_dense_replace` dense layers.

MLA: q through a low-rank pair (q_a, its norm, q_b; V2-Lite has no q_lora_rank and a plain
attn_q), k/v through one compressed latent (kv_a_mqa holding the latent and the decoupled
RoPE key, its norm, kv_b). The KV cache holds the latent and the RoPE key (`Arch`).
V3 routes with a learned per-expert bias (exp_probs_b).

GGUF (llama.cpp's DEEPSEEK2 graph, V2 and V3 alike): as llama.cpp's converter writes it, the
latent attention is an MQA over one "head" of kv_lora_rank + RoPE dimensions
(attention.head_count_kv 1, key_length / value_length the latent's sizes), the per-head sizes
in key_length_mla / value_length_mla; kv_b_proj is cut per head into attn_k_b (its key rows,
transposed: the absorbed query multiplies it) and attn_v_b. HF stores the RoPE dimensions
interleaved, as llama.cpp's graph rotates them (no reordering). The multi-token-prediction
layers past num_hidden_layers (DeepSeek-V3's layer 61) are left out, as llama.cpp's DEEPSEEK2
converter does. MoE keys: leading dense blocks, shared experts, the routed weights' scale and
normalisation, expert groups and the gating function (V3: sigmoid, which transformers' V3
always uses; V2: softmax), YaRN's log multiplier (0.1 * mscale_all_dim, as llama.cpp's
converter writes it and its loader undoes). Refused: attention biases and non-interleaved
RoPE weights (llama.cpp's graph has neither), and a V2-Lite-style config without q_lora_rank
unless llama.cpp would take the model for a Lite one (26 or 27 layers), since its loader
requires q_lora_rank otherwise. V2's group_limited_greedy picks groups by their best expert
where llama.cpp's graph sums each group's best two (V3's rule); such configs convert as
llama.cpp's converter writes them.

Import (models/gguf_import.py): kv_b_proj is merged back from attn_k_b / attn_v_b through
gguf_pieces; config.json gets the DEEPSEEK2 keys under transformers' names, with
num_nextn_predict_layers 0 (the file has no MTP layers) and YaRN's mscale = mscale_all_dim
from yarn_log_multiplier. A V3 file gating by softmax is refused (transformers' V3 class
always scores by sigmoid).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models.arch.base import (
    Arch,
    ArchFamily,
    GGUFMetadata,
    GGUFPiece,
    Tensor,
    block_tensor,
    f32_decimal,
)

# llama.cpp's gguf.ExpertGatingFuncType
_SOFTMAX, _SIGMOID = 1, 2
# layer counts llama.cpp's DEEPSEEK2 loader takes for a Lite model (no q_lora_rank read)
_LITE_LAYERS = (26, 27)
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
# llama.cpp's expert_gating_func -> the config's scoring_func
_SCORING = {_SOFTMAX: "softmax", _SIGMOID: "sigmoid"}
# GGUF names -> checkpoint names of MLA, the shared experts and V3's routing bias (kv_b_proj
# is merged back from attn_k_b / attn_v_b through gguf_pieces)
_NAMES = {
    f"blk.{{i}}.{g}": f"model.layers.{{i}}.{h}"
    for g, h in (
        ("attn_q_a.weight", "self_attn.q_a_proj.weight"),
        ("attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"),
        ("attn_q_b.weight", "self_attn.q_b_proj.weight"),
        ("attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"),
        ("attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"),
        ("attn_kv_b.weight", "self_attn.kv_b_proj.weight"),
        ("exp_probs_b.bias", "mlp.gate.e_score_correction_bias"),
        ("ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"),
        ("ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"),
        ("ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"),
    )
}


class DeepseekV2(ArchFamily, model_types=("deepseek_v2",)):
    hf_class = "DeepseekV2ForCausalLM"
    producers = frozenset({"gguf"})
    gguf_arch = "DEEPSEEK2"
    gguf_names = ("deepseek2",)  # V2 and V3 alike
    # the gating function transformers' model class applies
    gating_default = _SOFTMAX
    gguf_importable = True
    hf_tensor_names = MappingProxyType({**ArchFamily.hf_tensor_names, **_NAMES})

    def normalize_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        out = super().normalize_config(cfg)
        nope, rope = out.get("qk_nope_head_dim"), out.get("qk_rope_head_dim")
        if out.get("kv_lora_rank") and isinstance(nope, int) and isinstance(rope, int):
            # a query/key head is qk_nope + qk_rope wide (the catalogue's and llama.cpp's
            # key_length_mla); transformers' configs say head_dim = qk_rope_head_dim, the hub's
            # name none
            out["head_dim"] = nope + rope
        return out

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        fields = super().from_gguf_metadata(m)
        kv_lora = m.uint("attention.kv_lora_rank", 0)
        if kv_lora:
            # current llama.cpp states the latent's sizes in key/value_length and the
            # per-head sizes in key/value_length_mla; older files have only the latter's
            # values, in key/value_length
            rope = m.uint("rope.dimension_count")
            qk_head = m.uint("attention.key_length_mla", 0) or m.uint("attention.key_length")
            v_head = m.uint("attention.value_length_mla", 0) or m.uint("attention.value_length")
            if qk_head <= rope:
                raise m.error("attention.key_length_mla", f"{qk_head} is not above the RoPE part ({rope})")
            fields.update(
                q_lora_rank=m.uint("attention.q_lora_rank", 0),
                kv_lora_rank=kv_lora,
                qk_nope_head_dim=qk_head - rope,
                qk_rope_head_dim=rope,
                v_head_dim=v_head,
                head_dim=qk_head,
                # every query head has its own key and value (the file may say 1: the latent)
                n_kv_heads=fields["n_heads"],
            )
        # V3 routes with a learned per-expert bias
        if m.has_tensor(f"blk.{fields['first_dense_layers']}.exp_probs_b.bias"):
            fields["family"] = "deepseek_v3"
        return fields

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        if not a.uses_mla:
            return super().attention(a, i)
        h = a.hidden
        qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
        ts = [block_tensor(i, "attn_norm.weight", (h,), "norm")]
        if a.q_lora_rank:
            ts += [
                block_tensor(i, "attn_q_a.weight", (h, a.q_lora_rank), "attn"),
                block_tensor(i, "attn_q_a_norm.weight", (a.q_lora_rank,), "norm"),
                block_tensor(i, "attn_q_b.weight", (a.q_lora_rank, a.n_heads * qk_head), "attn"),
            ]
        else:
            ts.append(block_tensor(i, "attn_q.weight", (h, a.n_heads * qk_head), "attn"))
        return [
            *ts,
            block_tensor(i, "attn_kv_a_mqa.weight", (h, a.kv_lora_rank + a.qk_rope_head_dim), "attn"),
            block_tensor(i, "attn_kv_a_norm.weight", (a.kv_lora_rank,), "norm"),
            # kv_b_proj as llama.cpp's converter cuts it (gguf_pieces)
            *(Tensor(p.name, p.shape, "attn", i) for p in self._kv_b_pieces(a, i)),
            block_tensor(i, "attn_output.weight", (a.n_heads * a.v_head_dim, h), "attn"),
        ]

    # ---- GGUF converter -------------------------------------------------------------------

    def gguf_config_metadata(self, a: Arch, cfg: Mapping[str, Any]) -> dict[str, int | float | bool]:
        out: dict[str, int | float | bool] = {
            # MLA as MQA over the latent: one KV "head" of the latent and the RoPE key
            "attention.head_count_kv": 1,
            "attention.key_length": a.kv_lora_rank + a.qk_rope_head_dim,
            "attention.value_length": a.kv_lora_rank,
            "attention.key_length_mla": a.qk_nope_head_dim + a.qk_rope_head_dim,
            "attention.value_length_mla": a.v_head_dim,
            "attention.kv_lora_rank": a.kv_lora_rank,
            "leading_dense_block_count": a.first_dense_layers if a.is_moe else a.n_layers,
            "expert_feed_forward_length": int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]),
            "expert_shared_count": int(cfg.get("n_shared_experts") or 0),
            "rope.dimension_count": a.qk_rope_head_dim,
        }
        if a.q_lora_rank:
            out["attention.q_lora_rank"] = a.q_lora_rank
        if cfg.get("routed_scaling_factor") is not None:
            out["expert_weights_scale"] = float(cfg["routed_scaling_factor"])
        if cfg.get("norm_topk_prob"):
            out["expert_weights_norm"] = True
        if a.is_moe and not any(cfg.get(k) is not None for k in _GATING_KEYS):
            # the config names no scoring function: the one transformers' class applies
            out["expert_gating_func"] = self.gating_default
        rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if isinstance(rp, Mapping) and rp.get("mscale_all_dim") is not None:
            out["rope.scaling.yarn_log_multiplier"] = 0.1 * float(rp["mscale_all_dim"])
        return out

    def gguf_check_config(self, a: Arch, cfg: Mapping[str, Any], checkpoint_dir: Path) -> None:
        name = self.name
        if not a.uses_mla:
            raise EdgekitError(
                f"{name}: no kv_lora_rank in config.json; llama.cpp's DEEPSEEK2 graph is MLA only"
            )
        if cfg.get("attention_bias"):
            raise EdgekitError(f"{name}: attention_bias is set, which llama.cpp's DEEPSEEK2 graph lacks")
        if cfg.get("rope_interleave") is False:
            raise EdgekitError(
                f"{name}: rope_interleave is false; llama.cpp's DEEPSEEK2 graph rotates interleaved pairs"
            )
        if not a.q_lora_rank and a.n_layers not in _LITE_LAYERS:
            raise EdgekitError(
                f"{name}: no q_lora_rank, which llama.cpp's DEEPSEEK2 loader requires of a model "
                f"of {a.n_layers} layers (it reads none only at 26 or 27, its Lite models)"
            )
        n_kv = cfg.get("num_key_value_heads")
        if n_kv is not None and n_kv != a.n_heads:
            raise EdgekitError(
                f"{name}: num_key_value_heads {n_kv} is not num_attention_heads {a.n_heads}; "
                "llama.cpp's converter cuts kv_b_proj by the former"
            )

    def gguf_skips(self, a: Arch, hf_name: str) -> bool:
        # the multi-token-prediction layers, stored after the model's own
        m = _LAYER.match(hf_name)
        return m is not None and int(m.group(1)) >= a.n_layers

    def gguf_pieces(self, a: Arch, gguf_name: str, hf_shape: tuple[int, ...]) -> list[GGUFPiece] | None:
        m = re.fullmatch(r"blk\.(\d+)\.attn_kv_b\.weight", gguf_name)
        if m is None:
            return None
        want = self.hf_piece_shape(a, gguf_name)
        if tuple(hf_shape) != want:
            raise EdgekitError(
                f"{gguf_name}: the checkpoint's kv_b_proj is {list(hf_shape)}, "
                f"the config makes it {list(want or ())}"
            )
        return self._kv_b_pieces(a, int(m.group(1)))

    def _kv_b_pieces(self, a: Arch, i: int) -> list[GGUFPiece]:
        heads, nope, v, lora = a.n_heads, a.qk_nope_head_dim, a.v_head_dim, a.kv_lora_rank

        def k_b(x: Any) -> Any:
            # per head, its key rows transposed: [heads, kv_lora_rank, qk_nope]
            return x.reshape(heads, nope + v, lora)[:, :nope, :].transpose(0, 2, 1)

        def v_b(x: Any) -> Any:
            return x.reshape(heads, nope + v, lora)[:, nope:, :]

        return [
            GGUFPiece(f"blk.{i}.attn_k_b.weight", (nope, lora, heads), k_b),
            GGUFPiece(f"blk.{i}.attn_v_b.weight", (lora, v, heads), v_b),
        ]

    def hf_piece_shape(self, a: Arch, gguf_name: str) -> tuple[int, ...] | None:
        if not gguf_name.endswith(".attn_kv_b.weight"):
            return None
        return (a.n_heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank)

    # ---- GGUF import ---------------------------------------------------------------------

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        """transformers' DeepseekV2/V3 config from the DEEPSEEK2 keys. The file has no
        multi-token-prediction layers (the converter leaves them out): num_nextn_predict_layers
        is 0. YaRN's mscale and mscale_all_dim both come from yarn_log_multiplier (the file
        keeps only 0.1 * mscale_all_dim; DeepSeek-V3's config has both 1)."""
        cfg = super().hf_config(a, m, vectors)
        for key in ("num_experts", "shared_expert_intermediate_size", "head_dim"):
            cfg.pop(key, None)
        gating = m.uint("expert_gating_func", self.gating_default) if a.is_moe else self.gating_default
        if gating not in _SCORING or (self.gating_default == _SIGMOID and gating != _SIGMOID):
            raise m.error(
                "expert_gating_func",
                f"{gating} ({_SCORING.get(gating, 'unknown')}) is a scoring function "
                f"transformers' {self.hf_class} does not apply",
            )
        cfg |= {
            "q_lora_rank": a.q_lora_rank or None,
            "kv_lora_rank": a.kv_lora_rank,
            "qk_nope_head_dim": a.qk_nope_head_dim,
            "qk_rope_head_dim": a.qk_rope_head_dim,
            "v_head_dim": a.v_head_dim,
            "first_k_dense_replace": a.first_dense_layers if a.is_moe else a.n_layers,
        }
        if a.is_moe:
            cfg |= {
                "n_routed_experts": a.n_experts,
                "n_shared_experts": m.uint("expert_shared_count", 0),
                "moe_intermediate_size": m.uint("expert_feed_forward_length"),
                "n_group": m.uint("expert_group_count", 1),
                "topk_group": m.uint("expert_group_used_count", 1),
                "routed_scaling_factor": f32_decimal(m.number("expert_weights_scale", 1.0)),
                "norm_topk_prob": bool(m.get("expert_weights_norm")),
                "scoring_func": _SCORING[gating],
            }
        rp = dict(cfg["rope_parameters"])
        if rp["rope_type"] == "yarn":
            for key, name in (
                ("rope.scaling.yarn_beta_fast", "beta_fast"),
                ("rope.scaling.yarn_beta_slow", "beta_slow"),
                ("rope.scaling.yarn_attn_factor", "attention_factor"),
            ):
                if m.get(key) is not None:
                    rp[name] = f32_decimal(m.number(key, 0.0))
            if m.get("rope.scaling.yarn_log_multiplier") is not None:
                mscale = f32_decimal(10 * m.number("rope.scaling.yarn_log_multiplier", 0.0))
                rp |= {"mscale": mscale, "mscale_all_dim": mscale}
        cfg["rope_parameters"] = rp
        return cfg | self._hf_config_extra(cfg)

    def _hf_config_extra(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        # V2's router: greedy top-k over all experts, or the best of the used groups
        return {"topk_method": "greedy" if cfg.get("n_group", 1) <= 1 else "group_limited_greedy"}

    # ---- llm-compressor (GPTQ / AWQ / FP8): AWQ takes the pairs llm-compressor gives
    # DeepSeek-V2 (and GLM-4.7-Flash), which leave the router out of the norm's balance
    # layers; its DeepSeek-V3 pairs include the router, which the first_k_dense_replace dense
    # layers lack, and AWQ fails there
    producers = frozenset({*producers, "llm-compressor"})
    ct_awq_mappings = "DeepseekV2ForCausalLM"


# the config keys naming the scoring function, as llama.cpp's converter reads them
_GATING_KEYS = (
    "score_function",
    "scoring_func",
    "score_func",
    "moe_router_activation",
    "moe_router_activation_func",
    "expert_selection_fn",
)


class DeepseekV3(DeepseekV2, model_types=("deepseek_v3",)):
    hf_class = "DeepseekV3ForCausalLM"
    gating_default = _SIGMOID

    def _hf_config_extra(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        # RoPE on interleaved pairs, as llama.cpp's graph rotates them; no MTP layers in the file
        return {"rope_interleave": True, "num_nextn_predict_layers": 0}

    def router(self, a: Arch, i: int) -> list[Tensor]:
        bias = block_tensor(i, "exp_probs_b.bias", (a.n_experts,), "bias")
        return [*super().router(a, i), bias]
