import pytest

from edgekit.errors import EdgekitError, UnknownName
from edgekit.formats import get_format, registry, support
from edgekit.models import get
from edgekit.profiles.target import get_target

REQUIRED = [
    "gguf:F16",
    "gguf:BF16",
    "gguf:Q8_0",
    "gguf:Q6_K",
    "gguf:Q5_K_M",
    "gguf:Q5_K_S",
    "gguf:Q4_K_M",
    "gguf:Q4_K_S",
    "gguf:Q3_K_L",
    "gguf:Q3_K_M",
    "gguf:Q3_K_S",
    "gguf:Q2_K",
    "gptq:w4g128",
    "awq:w4g128",
    "fp8:dynamic",
    "fp8:block128",
    "bf16",
]


def test_registry_has_every_required_format():
    assert set(REQUIRED) <= set(registry())


def test_gptq_w4_qwen3_8b_is_about_6_1_gb_on_disk():
    # docs/references.md: Qwen3-8B W4A16 is 6.1 GB on disk because embeddings and lm_head stay BF16
    arch = get("qwen3-8b").arch
    plan = get_format("gptq:w4g128").tensor_plan(arch)
    assert sum(t.nbytes for t in plan) / 1e9 == pytest.approx(6.1, rel=0.03)
    kinds = {t.name: t.type for t in plan}
    assert kinds["token_embd.weight"] == "bf16" and kinds["output.weight"] == "bf16"
    assert kinds["blk.0.attn_q.weight"] == "int4-g128" and kinds["blk.0.attn_norm.weight"] == "bf16"


def test_fp8_keeps_router_bf16():
    arch = get("qwen3-30b-a3b").arch
    kinds = {t.name: t.type for t in get_format("fp8:dynamic").tensor_plan(arch)}
    assert kinds["blk.0.ffn_gate_inp.weight"] == "bf16" and kinds["blk.0.ffn_up_exps.weight"] == "fp8"


def test_format_parsing():
    assert get_format("GGUF:q4_k_m").id == "gguf:Q4_K_M"
    assert get_format("gptq:w4g32").group == 32
    assert get_format("gguf:f32").variant == "F32" and get_format("gguf:Q4_0").family == "gguf"
    with pytest.raises(UnknownName):
        get_format("gguf:Q9_K")
    with pytest.raises(EdgekitError):
        get_format("gptq:w5g100")


def test_fp8_w8a8_needs_cc_8_9_and_block_fp8_is_slow_on_ada():
    fp8 = get_format("fp8:dynamic")
    blk = get_format("fp8:block128")
    ada, hopper = get_target("rtx4090").device, get_target("h100").device
    assert support(fp8, ada).level == "native" and support(blk, ada).level == "slow"
    assert support(blk, hopper).level == "native"
    from dataclasses import replace

    ampere = replace(ada, name="a100", compute_capability=(8, 0))
    assert support(fp8, ampere).level == "slow" and "8.9" in support(fp8, ampere).reason


def test_cpu_runs_gguf_natively_and_int4_slowly(monkeypatch):
    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "20")
    cpu = get_target("cpu").device
    assert support(get_format("gguf:Q4_K_M"), cpu).level == "native"
    assert support(get_format("gptq:w4g128"), cpu).level == "slow"
