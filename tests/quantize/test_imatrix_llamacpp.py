"""The importance matrix collected in-process by llama.cpp (edgekit.quantize.imatrix_llamacpp)
against llama.cpp's own `llama-imatrix` on the same GGUF and text (same names and counts, sums
to float32-accumulation tolerance), against the transformers collector (close), and the GGUF
quantized with it against llama_model_quantize with the same importances."""

import os
import subprocess
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from tests.quantize.gguf_util import assert_same_as_llama_quantize

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

TINY = ["tiny_qwen3", "tiny_qwen3_moe"]
CTX, CHUNKS = 512, 3
# llama-imatrix adds x*x into float32 sums token by token; ours are float64 sums
SUM_RTOL = 1e-4
# transformers' F32 forward vs llama.cpp's F32 graph (F16 KV cache): the inputs differ slightly
TORCH_RTOL = 5e-3
FEW = 64  # routed tokens below which an expert's mean importance is a noisy few-token mean


def _checkpoint(request, name):
    from edgekit.models.source import Checkpoint, _local

    v = request.getfixturevalue(name)
    return v if isinstance(v, Checkpoint) else _local(Path(v), origin="local")


@pytest.fixture(scope="module")
def model(request, tmp_path_factory):
    """name -> (checkpoint, its F32 GGUF, calibration text file, llama.cpp-collected Imatrix)."""
    from edgekit.quantize import imatrix_llamacpp
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.text import default_calibration_text

    cache = {}

    def get(name):
        if name not in cache:
            ck = _checkpoint(request, name)
            d = tmp_path_factory.mktemp(name)
            f32 = d / "F32.gguf"
            convert(ck, f32, Recipe(mix="F32"))
            text = d / "calibration.txt"
            text.write_text(default_calibration_text())
            im = imatrix_llamacpp.collect(f32, text.read_text(), ctx=CTX, max_chunks=CHUNKS, threads=2)
            cache[name] = (ck, f32, text, im)
        return cache[name]

    return get


def _llama_imatrix(f32: Path, text: Path, out: Path, chunks: int):
    """llama.cpp's CLI on the same file and text: one window of CTX per batch, flash attention
    off (edgekit's llama.cpp default), no perplexity."""
    from edgekit.quantize import imatrix

    site = Path(sysconfig.get_paths()["purelib"])
    tool = site / "bin" / "llama-imatrix"
    if not tool.exists():
        pytest.skip("llama-imatrix was not built with llama-cpp-python (LLAMA_BUILD_TOOLS)")
    env = {**os.environ, "LD_LIBRARY_PATH": str(site / "lib")}
    cmd = [str(tool), "-m", str(f32), "-f", str(text), "-o", str(out), "-c", str(CTX), "-b", str(CTX)]
    cmd += ["--chunks", str(chunks), "-fa", "off", "-t", "2", "--no-ppl"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    return imatrix.load(out)


def _assert_same_as_tool(ours, tool) -> float:
    assert set(ours.sums) == set(tool.sums)
    assert ours.chunk_count == tool.chunk_count and ours.chunk_size == tool.chunk_size
    worst = 0.0
    for name in ours.sums:
        assert ours.sums[name].shape == tool.sums[name].shape, name
        np.testing.assert_array_equal(ours.counts[name], tool.counts[name], err_msg=name)
        np.testing.assert_allclose(ours.sums[name], tool.sums[name], rtol=SUM_RTOL, atol=1e-30, err_msg=name)
        rel = np.abs(ours.sums[name] - tool.sums[name]) / np.maximum(np.abs(tool.sums[name]), 1e-30)
        worst = max(worst, float(rel.max()))
    return worst


def _tolerance(counts: np.ndarray, width: int) -> np.ndarray:
    """TORCH_RTOL per column, widened by sqrt(FEW / n) for an expert routed n < FEW tokens: its
    importance is a mean over those few tokens, so the forwards' per-token differences do not
    average out (the tiny Qwen3-MoE: 4.5e-3 on an expert with 11 tokens, <= 1.6e-3 on >= 30)."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return np.repeat(TORCH_RTOL * np.sqrt(np.maximum(FEW / n, 1.0)), width // max(n.size, 1))


def _assert_close_to_torch(ours, torch_im) -> float:
    """Every matrix the transformers collector has, with the same counts and close importances;
    llama.cpp also sees the MoE router (ffn_gate_inp, a plain matmul there), nothing else."""
    assert set(torch_im.sums) <= set(ours.sums)
    assert {n.split(".", 2)[2] for n in set(ours.sums) - set(torch_im.sums)} <= {"ffn_gate_inp.weight"}
    a, b = ours.importances(), torch_im.importances()
    worst = 0.0
    for name in torch_im.sums:
        np.testing.assert_array_equal(ours.counts[name], torch_im.counts[name], err_msg=name)
        # relative to each value, floored at 1e-3 of the matrix's mean importance: a column
        # with importance ~1e-7 of its neighbours' (a rarely routed expert) carries no weight
        floor = 1e-3 * float(np.abs(b[name]).mean())
        rel = np.abs(a[name] - b[name]) / np.maximum(np.abs(b[name]), floor)
        over = rel / _tolerance(torch_im.counts[name], rel.size)
        i = int(over.argmax())
        assert over[i] < 1, (name, i, a[name][i], b[name][i], rel[i])
        worst = max(worst, float(rel[i]))
    return worst


@pytest.mark.parametrize("name", TINY)
def test_same_as_llama_imatrix(name, model, tmp_path, record_property):
    ck, f32, text, ours = model(name)
    tool = _llama_imatrix(f32, text, tmp_path / "tool.imatrix.gguf", CHUNKS)
    worst = _assert_same_as_tool(ours, tool)
    record_property("max_rel_sum_diff_vs_llama_imatrix", worst)
    print(f"{name}: max relative in_sum2 difference vs llama-imatrix {worst:.2e}")
    if name == "tiny_qwen3_moe":
        assert ours.unseen_experts() == tool.unseen_experts()
        assert any(len(c) > 1 for c in ours.counts.values())  # experts counted per expert


@pytest.mark.parametrize("name", TINY)
def test_close_to_the_transformers_collector(name, model, record_property):
    from edgekit.quantize import imatrix

    ck, f32, text, ours = model(name)
    theirs = imatrix.collect(ck, text.read_text(), ctx=CTX, max_chunks=CHUNKS)
    worst = _assert_close_to_torch(ours, theirs)
    record_property("max_rel_importance_diff_vs_transformers", worst)
    print(f"{name}: max relative importance difference vs transformers {worst:.2e}")


@pytest.mark.parametrize("name", TINY)
def test_quantized_with_it_equals_llama_model_quantize(name, model, tmp_path):
    ck, f32, text, ours = model(name)
    assert_same_as_llama_quantize(ck, f32, "Q4_K_M", ours.importances(), tmp_path)


def test_file_round_trip_records_the_collector(model, tmp_path):
    from edgekit.quantize import imatrix, imatrix_llamacpp

    _, _, _, ours = model("tiny_qwen3_moe")
    path = tmp_path / "x.imatrix.gguf"
    imatrix.save(ours, path)
    back = imatrix.load(path)
    assert back.collector == ours.collector == imatrix_llamacpp.collector_name()
    assert back.summary()["collector"] == ours.collector
    assert set(back.sums) == set(ours.sums)
    for n in ours.sums:
        np.testing.assert_array_equal(back.sums[n], ours.sums[n])
        np.testing.assert_array_equal(back.counts[n], ours.counts[n])


def test_too_short_text_is_a_one_line_error(model):
    from edgekit.errors import EdgekitError
    from edgekit.quantize import imatrix_llamacpp

    _, f32, _, _ = model("tiny_qwen3")
    with pytest.raises(EdgekitError, match="fewer than one window"):
        imatrix_llamacpp.collect(f32, "too short", ctx=CTX)


@pytest.mark.slow
def test_default_model_same_as_llama_imatrix_and_close_to_transformers(smollm2_checkpoint, tmp_path):
    from edgekit.bench.reference import reference_gguf
    from edgekit.quantize import imatrix, imatrix_llamacpp
    from edgekit.text import default_calibration_text

    chunks = 2
    ref = reference_gguf(smollm2_checkpoint)
    text = tmp_path / "calibration.txt"
    text.write_text(default_calibration_text())
    t0 = time.perf_counter()
    ours = imatrix_llamacpp.collect(ref, text.read_text(), ctx=CTX, max_chunks=chunks, threads=2)
    t1 = time.perf_counter()
    tool = _llama_imatrix(ref, text, tmp_path / "tool.imatrix.gguf", chunks)
    t2 = time.perf_counter()
    theirs = imatrix.collect(smollm2_checkpoint, text.read_text(), ctx=CTX, max_chunks=chunks)
    t3 = time.perf_counter()
    vs_tool = _assert_same_as_tool(ours, tool)
    vs_torch = _assert_close_to_torch(ours, theirs)
    print(
        f"smollm2-135m, {chunks} windows: llama.cpp in-process {t1 - t0:.1f} s, "
        f"llama-imatrix {t2 - t1:.1f} s, transformers {t3 - t2:.1f} s; max rel diff "
        f"vs llama-imatrix {vs_tool:.2e}, vs transformers {vs_torch:.2e}"
    )
