import pytest

from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.models import get
from edgekit.plan import plan
from edgekit.profiles.target import get_target


def test_qwen3_8b_on_rtx4090_at_32k():
    p = plan(get("qwen3-8b"), get_target("rtx4090"), ctx=32768)
    rows = {r.format: r for r in p.rows}
    q4 = rows["gguf:Q4_K_M"]
    assert q4.fits and q4.kv_bytes == 147_456 * 32768
    assert q4.per_device.kv_cache == q4.kv_bytes
    # llama.cpp keeps the untied input embedding in host RAM
    assert q4.host_bytes > 0 and q4.per_device.weights < q4.weights_bytes
    # decode roofline: 1008 GB/s over (weights touched + KV read) bytes
    assert q4.decode_tok_s == pytest.approx(1008e9 / q4.bytes_per_token, rel=1e-6)
    assert [r.weights_bytes for r in p.rows] == sorted(r.weights_bytes for r in p.rows)


def test_235b_on_8xh100_fits_some_and_applies_fp8_rule():
    p = plan(get("qwen3-235b-a22b"), get_target("8xh100"), ctx=32768)
    rows = {r.format: r for r in p.rows}
    assert rows["bf16"].fits and rows["bf16"].layout.tp == 8
    assert rows["fp8:block128"].layout.ep == 8
    assert rows["gguf:Q4_K_M"].layout.strategy == "layer-split"


def test_235b_fp8_on_4xh100():
    p = plan(get("qwen3-235b-a22b"), get_target("4xh100"), ctx=8192, formats=[get_format("fp8:block128")])
    r = p.rows[0]
    assert r.layout.tp == 4 and r.layout.ep == 1  # 1536 / 4 = 384 is a multiple of 128
    assert r.fits


def test_235b_on_rtx4090_nothing_fits_and_says_by_how_much():
    p = plan(get("qwen3-235b-a22b"), get_target("rtx4090"))
    assert not p.fitting
    for r in p.rows:
        assert r.miss_bytes > 50 * 1024**3 and r.max_context == 0


def test_30b_a3b_on_one_h100_and_4090_at_q4():
    r = plan(get("qwen3-30b-a3b"), get_target("h100"), formats=[get_format("bf16")]).rows[0]
    assert r.fits
    r = plan(
        get("qwen3-30b-a3b"), get_target("rtx4090"), ctx=16384, formats=[get_format("gguf:Q4_K_M")]
    ).rows[0]
    assert r.fits and 16384 <= r.max_context


def test_max_context_is_the_largest_that_fits():
    model, tg = get("qwen3-32b"), get_target("rtx4090")
    fmt = [get_format("gguf:Q4_K_M")]
    r = plan(model, tg, ctx=4096, formats=fmt).rows[0]
    assert 0 < r.max_context < model.context
    assert plan(model, tg, ctx=r.max_context, formats=fmt).rows[0].fits
    assert not plan(model, tg, ctx=r.max_context + 1, formats=fmt).rows[0].fits


def test_kv_type_and_batch_scale_the_cache():
    model, tg = get("qwen3-8b"), get_target("rtx4090")
    fmt = [get_format("gguf:Q4_K_M")]
    f16 = plan(model, tg, ctx=8192, formats=fmt).rows[0]
    q8 = plan(model, tg, ctx=8192, kv_type="q8_0", formats=fmt).rows[0]
    b4 = plan(model, tg, ctx=8192, batch=4, formats=fmt).rows[0]
    assert q8.kv_bytes == pytest.approx(f16.kv_bytes * 34 / 64)
    assert b4.kv_bytes == 4 * f16.kv_bytes
    fp8 = plan(model, tg, ctx=8192, kv_type="fp8", formats=fmt).rows[0]
    assert fp8.kv_type == "q8_0" and any("no fp8" in n for n in fp8.notes)


def test_moe_roofline_reads_only_active_experts():
    r = plan(get("qwen3-30b-a3b"), get_target("h100"), ctx=1, formats=[get_format("bf16")]).rows[0]
    # about 3.3B active params minus one embedding matrix, in BF16
    assert 5.0e9 < r.bytes_per_token < 6.3e9


def test_bad_arguments():
    with pytest.raises(EdgekitError):
        plan(get("qwen3-8b"), get_target("rtx4090"), ctx=0)
    with pytest.raises(EdgekitError):
        plan(get("qwen3-8b"), get_target("rtx4090"), kv_type="int3")


def test_the_planner_asks_the_runtime_for_kv_types_overhead_and_split(monkeypatch):
    """KV types, the memory-overhead model and the multi-device split come from the runtime's
    declared capabilities (edgekit.runtimes.base.Capabilities), not from tables in plan.py."""
    from edgekit.runtimes import registry
    from edgekit.runtimes.base import Capabilities

    model, fmt = get("qwen3-8b"), [get_format("gguf:Q4_K_M")]
    before = plan(model, get_target("2xrtx4090"), ctx=8192, kv_type="q8_0", formats=fmt).rows[0]
    assert before.kv_type == "q8_0" and before.layout.strategy == "layer-split" and before.host_bytes > 0
    real = registry.capabilities

    def fake(name: str) -> Capabilities:
        if name != "llama.cpp":
            return real(name)
        return Capabilities(
            formats=("gguf",),
            devices=("cpu", "cuda"),
            kv_cache_types=("f16", "fp8"),
            overhead_model=lambda arch, device, batch, options: 12345,
        )

    monkeypatch.setattr(registry, "capabilities", fake)
    after = plan(model, get_target("2xrtx4090"), ctx=8192, kv_type="q8_0", formats=fmt).rows[0]
    assert after.kv_type == "f16" and any("no q8_0 KV cache" in n for n in after.notes)
    assert after.per_device.overhead == 12345
    assert after.layout.strategy == "tensor-parallel" and after.host_bytes == 0


def test_vllm_reserve_comes_from_its_options():
    from edgekit.runtimes import registry, vllm

    caps = registry.capabilities("vllm")
    assert caps.server and caps.options is vllm.Options
    dev = get_target("h100").device
    arch = get("qwen3-8b").arch
    low = caps.overhead(arch, dev, 1, vllm.Options(gpu_memory_utilization=0.5))
    assert low - caps.overhead(arch, dev, 1) == int(0.5 * dev.memory_bytes) - int(0.1 * dev.memory_bytes)
    assert registry.capabilities("onnxruntime").planned_format("bf16") == "onnx:fp32"


def test_plan_command_is_fast_and_imports_nothing_heavy():
    import json
    import os
    import subprocess
    import sys
    import time

    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from edgekit.cli.main import main\n"
        "try:\n"
        "    main(['plan', 'qwen3-8b', '--target', 'rtx4090', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'llama_cpp', 'numpy', 'transformers', 'onnxruntime') if m in "
        "sys.modules]\n"
        "print('\\n' + __import__('json').dumps({'heavy': heavy, 's': time.perf_counter() - t}))\n"
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=60
    )
    wall = time.perf_counter() - t0
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], out
    assert out["s"] < 1.0 and wall < 3.0, (out, wall)
