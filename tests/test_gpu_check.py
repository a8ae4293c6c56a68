"""benchmarks/gpu_check.sh --cpu end to end (tiny shapes, the installed CPU build), so the GPU
script cannot rot between GPU runs; the random GGUF writer's blocks; the travelling-size check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


@pytest.mark.slow
@pytest.mark.llamacpp
def test_cpu_mode_writes_every_figure(tmp_path, tiny_tokenizer):
    pytest.importorskip("llama_cpp")
    if not (SITE / "bin" / "llama-bench").is_file():
        pytest.skip("no llama-bench in site-packages/bin (scripts/setup.sh builds it)")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "EDGEKIT_CPU_BANDWIDTH_GBS": "20"}
    p = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--cpu",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
            "--tokenizer",
            str(tiny_tokenizer),
            "--budget",
            "90",
            # two of the three files: each costs two process starts (the Q8_0 types are checked below)
            "--only",
            "tiny-qwen3-Q4_K_M,tiny-qwen3-moe-Q4_K_M",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").is_file()
    assert d["schema"] == "edgekit.gpu_check/1" and d["mode"] == "cpu"
    failed = [s for s in d["steps"] if s["status"] not in ("ok", "skipped")]
    assert not failed, failed
    assert any("build" in s for s in d["skipped"])  # what it skipped is said
    assert set(d["files"]) == {"tiny-qwen3-Q4_K_M", "tiny-qwen3-moe-Q4_K_M"}
    assert any("tiny-qwen3-Q8_0" in s and "--only" in s for s in d["skipped"])
    for key, rec in d["files"].items():
        e, lb = rec["edgekit"], rec["llama_bench"]
        for fig in ("ttft_s", "prefill_tok_s", "decode_tok_s", "roofline_share", "planned_peak_bytes"):
            assert e[fig] > 0, (key, fig, e)
        assert e["measured_peak_bytes"] > 0 and 0.5 < e["planned_over_measured"] < 2.0
        for fig in ("prefill_tok_s", "decode_tok_s", "ttft_est_s", "peak_rss_bytes", "roofline_share"):
            assert lb[fig] > 0, (key, fig, lb)
        assert lb["backends"] == "CPU" and lb["n_gpu_layers"] == 0
        r = rec["ratio_edgekit_over_llama_bench"]
        assert r["prefill"] > 0 and r["decode"] > 0
    types = d["files"]["tiny-qwen3-Q4_K_M"]["tensor_types"]
    assert set(types) == {"F32", "Q4_K", "Q6_K"}
    # the GGUF files stay in the work directory, never under --out (they would travel back)
    assert not list(out.rglob("*.gguf"))


def test_random_blocks_dequantize_to_finite_weights():
    np = pytest.importorskip("numpy")
    gguf = pytest.importorskip("gguf")
    from edgekit.gguf_io import ggml_types
    from edgekit.quantize.gguf_random import _FP16_FIELDS, block_pool

    rng = np.random.default_rng(0)
    for ty in _FP16_FIELDS:
        pool = block_pool(ty, rng, 1 << 18)
        x = gguf.quants.dequantize(
            pool.reshape(-1, ggml_types.get(ty).block_bytes), gguf.GGMLQuantizationType[ty]
        )
        assert np.isfinite(x).all(), ty
        assert 0.005 < float(x.std()) < 0.08, (ty, float(x.std()))


def test_random_gguf_types_are_llama_quantize_s(tmp_path, tiny_tokenizer):
    pytest.importorskip("gguf")
    from edgekit.gguf_io.reader import read_header
    from edgekit.quantize.gguf_mix import assign_types
    from edgekit.quantize.gguf_random import random_gguf, shaped_arch

    shape = {"hidden": 256, "n_heads": 4, "n_kv_heads": 2, "head_dim": 64, "ffn": 768, "vocab": 640}
    art = random_gguf("qwen3-8b", tmp_path, "Q4_K_M", tiny_tokenizer, layers=3, shape=shape, name="t")
    _, arch = shaped_arch("qwen3-8b", 3, shape)
    want = assign_types(arch.tensors(), "Q4_K_M", arch)
    g = read_header(art.path)
    assert {t.name: t.type for t in g.tensors} == want
    assert art.manifest.format == "gguf:Q4_K_M"
    assert (
        json.loads((Path(art.manifest.source["path"]) / "config.json").read_text())["num_hidden_layers"] == 3
    )
    q8 = random_gguf("qwen3-8b", tmp_path, "Q8_0", tiny_tokenizer, layers=3, shape=shape, name="t")
    assert {t.type for t in read_header(q8.path).tensors} == {"F32", "Q8_0"}


def test_travelling_size_check(tmp_path):
    d = tmp_path / "travel"
    d.mkdir()
    (d / "blob").write_bytes(b"x" * (2 << 20))
    script = str(ROOT / "benchmarks" / "gpu_prepare.py")
    over = subprocess.run(
        [sys.executable, script, "--check", str(d), "--limit-mib", "1", "--no-tree"],
        capture_output=True,
        text=True,
    )
    assert over.returncode == 1 and "OVER the 1 MiB limit" in over.stdout
    under = subprocess.run([sys.executable, script, "--check", str(d)], capture_output=True, text=True)
    assert (
        under.returncode == 0 and "under the 64 MiB limit" in under.stdout and "working tree" in under.stdout
    )
    missing = subprocess.run(
        [sys.executable, script, "--check", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
