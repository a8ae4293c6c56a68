"""Parallel layouts: the head rules, the FP8 block-128 rule (vLLM #25292) and the layer split."""

from edgekit.layout import choose_layout, fp8_block_problem, tp_ok
from edgekit.models import get


def test_fp8_block_rule_for_qwen3_moe():
    a30, a235 = get("qwen3-30b-a3b").arch, get("qwen3-235b-a22b").arch
    assert fp8_block_problem(a30, 4, experts_sliced=True)  # 768 / 4 = 192
    assert fp8_block_problem(a30, 2, experts_sliced=True) is None  # 384
    assert fp8_block_problem(a235, 8, experts_sliced=True)  # 1536 / 8 = 192
    assert fp8_block_problem(a235, 4, experts_sliced=True) is None  # 384


def test_235b_fp8_on_8_gpus_switches_to_expert_parallel():
    lay = choose_layout(get("qwen3-235b-a22b").arch, 8, fp8_block=True)
    assert lay.tp == 8 and lay.ep == 8 and lay.strategy == "tensor+expert-parallel"
    assert any("192" in n for n in lay.notes)


def test_235b_bf16_on_8_gpus_is_plain_tensor_parallel_with_kv_replication():
    lay = choose_layout(get("qwen3-235b-a22b").arch, 8)
    assert lay.tp == 8 and lay.ep == 1
    assert any("replicated" in n for n in lay.notes)


def test_head_rules():
    a = get("qwen3-14b").arch  # 40 q heads, 8 kv heads
    assert tp_ok(a, 8) and not tp_ok(a, 16)
    lay = choose_layout(a, 16)
    assert lay.tp == 8 and lay.pp == 2


def test_gguf_uses_layer_split():
    lay = choose_layout(get("qwen3-32b").arch, 2, layer_split="llama.cpp --split-mode layer")
    assert lay.strategy == "layer-split" and lay.pp == 2
