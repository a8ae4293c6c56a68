"""GGUF mix rules against llama.cpp's published Llama-3.1-8B sizes (tools/quantize/README.md)."""

import pytest

from edgekit.formats import get_format
from edgekit.gguf_io import ggml_types
from edgekit.models import get
from edgekit.quantize.gguf_mix import assign_types

# type: (bits per weight, GiB), docs/references.md "Bits per weight: Llama-3.1-8B GGUF"
LLAMA_31_8B = {
    "Q2_K": (3.1593, 2.95),
    "Q3_K_S": (3.6429, 3.41),
    "Q3_K_L": (4.2979, 4.02),
    "Q4_K_S": (4.6672, 4.36),
    "Q4_K_M": (4.8944, 4.58),
    "Q5_K_S": (5.5704, 5.21),
    "Q5_K_M": (5.7036, 5.33),
    "Q6_K": (6.5633, 6.14),
    "Q8_0": (8.5008, 7.95),
    "F16": (16.0005, 14.96),
}


@pytest.mark.parametrize("mix", LLAMA_31_8B)
def test_llama31_8b_sizes_within_2_percent(mix):
    bpw, gib = LLAMA_31_8B[mix]
    arch = get("llama-3.1-8b").arch
    fmt = get_format(f"gguf:{mix}")
    assert fmt.weight_bytes(arch) / 1024**3 == pytest.approx(gib, rel=0.02)
    assert fmt.bits_per_weight(arch) == pytest.approx(bpw, rel=0.02)


def test_q4_k_m_keeps_half_of_attn_v_and_ffn_down_at_q6_k():
    arch = get("llama-3.1-8b").arch
    types = assign_types(arch.tensors(), "Q4_K_M", arch)
    v = [types[f"blk.{i}.attn_v.weight"] for i in range(32)]
    d = [types[f"blk.{i}.ffn_down.weight"] for i in range(32)]
    assert v.count("Q6_K") == 16 and d.count("Q6_K") == 16
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_tied_embedding_is_treated_as_output():
    arch = get("qwen3-0.6b").arch
    types = assign_types(arch.tensors(), "Q4_K_M", arch)
    assert types["token_embd.weight"] == "Q6_K"


def test_row_length_fallback_for_smollm2():
    # 576 and 1536 are not multiples of 256: k-quants fall back to 32-blocks
    arch = get("smollm2-135m").arch
    types = assign_types(arch.tensors(), "Q4_K_M", arch)
    assert types["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0
    assert types["token_embd.weight"] == "Q8_0"  # output treatment, 576 % 256 != 0
    assert set(types.values()) <= {"F32", "Q5_0", "Q8_0", "Q6_K", "Q4_K"}


def test_moe_router_stays_wide_and_experts_quantized():
    arch = get("qwen3-30b-a3b").arch
    types = assign_types(arch.tensors(), "Q4_K_M", arch)
    assert types["blk.0.ffn_gate_inp.weight"] == "F32"
    assert types["blk.0.ffn_gate_exps.weight"] == "Q4_K"


def test_overrides_win():
    arch = get("llama-3.1-8b").arch
    types = assign_types(arch.tensors(), "Q4_K_M", arch, overrides=[(r"ffn_up", "Q8_0")])
    assert types["blk.3.ffn_up.weight"] == "Q8_0"


def test_type_table_matches_gguf_package():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for t in ggml_types.TYPES.values():
        q = GGMLQuantizationType(t.id)
        assert q.name == t.name
        assert GGML_QUANT_SIZES[q] == (t.block, t.block_bytes)
