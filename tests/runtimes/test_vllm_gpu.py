"""On a CUDA machine with vLLM: a random-weight MoE with Qwen3-30B-A3B's layer shapes (4 of its
48 layers), BF16 and FP8 (vLLM's online FP8), one GPU, expert parallel on, served and measured
by `benchmarks/vllm_moe.py`'s path. Skipped without an NVIDIA GPU or without vLLM's CUDA build."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_module():
    from edgekit.bench.device import nvml_gpus
    from edgekit.runtimes.vllm_server import find_vllm

    gpus, why = nvml_gpus()
    if not gpus:
        pytest.skip(f"needs an NVIDIA GPU ({why})")
    inst, why = find_vllm()
    if inst is None or inst.device != "cuda":
        pytest.skip(why or f"{inst.distribution} runs on the CPU; needs vLLM's CUDA build")
    spec = importlib.util.spec_from_file_location("vllm_moe", ROOT / "benchmarks" / "vllm_moe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
def test_qwen3_30b_a3b_shaped_moe_on_one_gpu(bench_module, fmt, tmp_path_factory):
    from edgekit.bench.speed import Settings

    work = tmp_path_factory.getbasetemp() / "synthetic"
    ckpt = bench_module.build(work, 4)
    settings = Settings(prompt_tokens=256, gen_tokens=64, batches=(1, 8), repeats=2, warmup=1, n_ctx=320)
    row = bench_module.run(ckpt, fmt, settings, None, tmp_path_factory.mktemp("store"), [])
    assert "error" not in row, row
    r = row["result"]
    assert r["device"] == "cuda" and r["peak_vram_bytes"] > 0
    assert "--enable-expert-parallel" in r["runtime"]["argv"]
    assert (
        r["runtime"]["log_facts"]["kv_cache_pool"] == "GPU"
        and r["runtime"]["log_facts"]["kv_cache_tokens"] > 0
    )
    for b in r["batches"]:
        assert b["measured"] and b["server"]["requests_finished"] == 2 * b["batch"]
        assert b["throughput"]["generated_tokens"] == 64 * 2 * b["batch"]
    # 4 layers of 128 experts + embeddings: ~3.1 B parameters; FP8 stores the experts in half the bytes
    weights_gib = r["runtime"]["log_facts"].get("model_memory_gib")
    if weights_gib is not None:
        assert (3.0 < weights_gib < 7.0) if fmt == "bf16" else (1.5 < weights_gib < 5.0)
