"""The weight tensors of an architecture, with llama.cpp's GGUF names and shapes.

Shapes are in GGUF order (row length first). Per-layer tensors are listed layer by layer;
code that needs llama.cpp's processing order sorts by name itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.models.arch import Tensor

if TYPE_CHECKING:
    from edgekit.models.arch import Arch


def inventory(a: Arch) -> list[Tensor]:
    out: list[Tensor] = [Tensor("token_embd.weight", (a.hidden, a.vocab), "embed")]
    for i in range(a.n_layers):
        out += _attention(a, i)
        out += _mlp(a, i)
    out.append(Tensor("output_norm.weight", (a.hidden,), "norm"))
    if not a.tied_embeddings:
        out.append(Tensor("output.weight", (a.hidden, a.vocab), "output"))
    return out


def _t(i: int, name: str, shape: tuple[int, ...], role: str) -> Tensor:
    return Tensor(f"blk.{i}.{name}", shape, role, i)


def _attention(a: Arch, i: int) -> list[Tensor]:
    h = a.hidden
    ts = [_t(i, "attn_norm.weight", (h,), "norm")]
    if a.uses_mla:
        qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            ts += [
                _t(i, "attn_q_a.weight", (h, a.q_lora_rank), "attn"),
                _t(i, "attn_q_a_norm.weight", (a.q_lora_rank,), "norm"),
                _t(i, "attn_q_b.weight", (a.q_lora_rank, a.n_heads * qk_head), "attn"),
            ]
        else:
            ts.append(_t(i, "attn_q.weight", (h, a.n_heads * qk_head), "attn"))
        ts += [
            _t(i, "attn_kv_a_mqa.weight", (h, a.kv_lora_rank + a.qk_rope_head_dim), "attn"),
            _t(i, "attn_kv_a_norm.weight", (a.kv_lora_rank,), "norm"),
            _t(
                i,
                "attn_kv_b.weight",
                (a.kv_lora_rank, a.n_heads * (a.qk_nope_head_dim + a.v_head_dim)),
                "attn",
            ),
            _t(i, "attn_output.weight", (a.n_heads * a.v_head_dim, h), "attn"),
        ]
    elif a.family == "phi3":
        qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
        ts += [
            _t(i, "attn_qkv.weight", (h, qkv), "attn"),
            _t(i, "attn_output.weight", (a.n_heads * a.head_dim, h), "attn"),
        ]
    else:
        q, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        ts += [
            _t(i, "attn_q.weight", (h, q), "attn"),
            _t(i, "attn_k.weight", (h, kv), "attn"),
            _t(i, "attn_v.weight", (h, kv), "attn"),
        ]
        if a.qkv_bias:
            ts += [
                _t(i, "attn_q.bias", (q,), "bias"),
                _t(i, "attn_k.bias", (kv,), "bias"),
                _t(i, "attn_v.bias", (kv,), "bias"),
            ]
        ts.append(_t(i, "attn_output.weight", (q, h), "attn"))
        if a.qk_norm:
            ts += [
                _t(i, "attn_q_norm.weight", (a.head_dim,), "norm"),
                _t(i, "attn_k_norm.weight", (a.head_dim,), "norm"),
            ]
    if a.family in ("gemma3", "gemma3_text"):
        ts.append(_t(i, "post_attention_norm.weight", (h,), "norm"))
    return ts


def _mlp(a: Arch, i: int) -> list[Tensor]:
    h = a.hidden
    ts = [_t(i, "ffn_norm.weight", (h,), "norm")]
    if a.is_moe_layer(i):
        e, f = a.n_experts, a.expert_ffn
        ts.append(_t(i, "ffn_gate_inp.weight", (h, e), "router"))
        if a.family == "deepseek_v3":
            ts.append(_t(i, "exp_probs_b.bias", (e,), "bias"))
        ts += [
            _t(i, "ffn_gate_exps.weight", (h, f, e), "expert"),
            _t(i, "ffn_up_exps.weight", (h, f, e), "expert"),
            _t(i, "ffn_down_exps.weight", (f, h, e), "expert"),
        ]
        if a.shared_expert_ffn:
            s = a.shared_expert_ffn
            ts += [
                _t(i, "ffn_gate_shexp.weight", (h, s), "shared_expert"),
                _t(i, "ffn_up_shexp.weight", (h, s), "shared_expert"),
                _t(i, "ffn_down_shexp.weight", (s, h), "shared_expert"),
            ]
    elif a.family == "phi3":
        ts += [
            _t(i, "ffn_up.weight", (h, 2 * a.ffn), "ffn"),
            _t(i, "ffn_down.weight", (a.ffn, h), "ffn"),
        ]
    else:
        ts += [
            _t(i, "ffn_gate.weight", (h, a.ffn), "ffn"),
            _t(i, "ffn_up.weight", (h, a.ffn), "ffn"),
            _t(i, "ffn_down.weight", (a.ffn, h), "ffn"),
        ]
    if a.family in ("gemma3", "gemma3_text"):
        ts.append(_t(i, "post_ffw_norm.weight", (h,), "norm"))
    return ts
