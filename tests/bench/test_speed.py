"""`edgekit bench`: statistics, device detection (NVML present or not), the results store, and a
real measurement of the default model's Q4_K_M GGUF through the llama.cpp runtime."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from edgekit.bench import device as devmod
from edgekit.bench import results_store
from edgekit.bench.speed import Settings, Stat, parse_batches
from edgekit.errors import EdgekitError
from tests.bench.bench_util import fake_run, has_nvml_gpu, smollm2_q4km


@pytest.fixture(scope="session")
def q4km(smollm2_checkpoint, tmp_path_factory):
    return smollm2_q4km(smollm2_checkpoint, tmp_path_factory)


@pytest.fixture(autouse=True)
def _fixed_bandwidth(monkeypatch):
    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "20")  # no probe inside the tests


# ---- statistics and settings ------------------------------------------------------------


def test_stat_median_and_spread():
    s = Stat.of([3.0, 1.0, 2.0, 10.0, float("nan")])
    assert s.n == 4 and s.median == 2.5 and s.min == 1.0 and s.max == 10.0
    assert s.q1 <= s.median <= s.q3
    one = Stat.of([5.0])
    assert one.median == one.q1 == one.q3 == 5.0
    empty = Stat.of([])
    assert empty.n == 0 and math.isnan(empty.median) and empty.to_dict()["median"] is None


def test_parse_batches_and_settings():
    assert parse_batches("1,4,16") == (1, 4, 16) and parse_batches("4, 4,1") == (4, 1)
    for bad in ("a", "0", "", "1,-2"):
        with pytest.raises(EdgekitError):
            parse_batches(bad)
    Settings().check()
    for bad in (
        Settings(gen_tokens=1),
        Settings(prompt_tokens=0),
        Settings(repeats=0),
        Settings(batches=()),
        Settings(n_ctx=100),
        Settings(device="tpu"),
        Settings(threads=0),
    ):
        with pytest.raises(EdgekitError):
            bad.check()
    assert Settings(prompt_tokens=100, gen_tokens=20).ctx == 120


# ---- device detection --------------------------------------------------------------------


def test_detect_without_gpu_reports_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: nvidia-ml-py absent
    h = devmod.detect(label="box")
    assert h.gpus == () and "nvidia-ml-py" in h.gpu_note and h.label == "box"
    assert h.logical_cores >= 1 and h.ram_bytes > 0 and len(h.fingerprint) == 16
    d = h.to_dict()
    assert json.loads(json.dumps(d))["gpus"] == [] and d["cpu"]["model"]


def test_nvml_init_failure_is_no_gpu(monkeypatch):
    fake = types.SimpleNamespace(
        nvmlInit=lambda: (_ for _ in ()).throw(RuntimeError("NVML Shared Library Not Found"))
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, note = devmod.nvml_gpus()
    assert gpus == [] and "NVML unavailable" in note and "no GPU" in note
    assert not devmod.VramSampler().ok and devmod.VramSampler().sample() == 0


def _fake_nvml(names, procs=()):
    class H:
        def __init__(self, i):
            self.i = i

    return types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"575.1",
        nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=H,
        nvmlDeviceGetName=lambda h: names[h.i],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=80 * 2**30),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetComputeRunningProcesses=lambda h: list(procs),
    )


def test_nvml_gpus_are_read_and_matched_to_profiles(monkeypatch):
    names = [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 PCIe",
        "NVIDIA GeForce RTX 4090",
        "NVIDIA H200",
        "Tesla T4",
    ]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(names))
    gpus, note = devmod.nvml_gpus()
    assert [g.profile for g in gpus] == ["h100-sxm", "h100-pcie", "rtx4090", "h200", None]
    assert gpus[0].compute_capability == (9, 0) and gpus[0].memory_bytes == 80 * 2**30 and "575.1" in note
    h = devmod.detect()
    assert len(h.gpus) == 5 and h.to_dict()["gpus"][0]["compute_capability"] == "9.0"
    t, why = devmod.planner_target(h, "cuda")
    assert t.name == "h100-sxm" and "matched" in why


def test_vram_sampler_takes_this_process_peak(monkeypatch):
    import os

    procs = [
        types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * 2**30),
        types.SimpleNamespace(pid=1, usedGpuMemory=9 * 2**30),
    ]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(["NVIDIA H100 80GB HBM3"], procs))
    s = devmod.VramSampler()
    assert s.ok and s.sample() == 3 * 2**30 and s.peak == 3 * 2**30


def test_unknown_gpu_has_no_roofline(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(["Tesla T4"]))
    t, why = devmod.planner_target(devmod.detect(), "cuda")
    assert t is None and "no target profile" in why


# ---- results store -----------------------------------------------------------------------


def test_store_merges_devices(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    results_store._write(fake_run("r1", "laptop", "aaaa", 50.0), mine)
    results_store._write(fake_run("r2", "box4090", "bbbb", 400.0, device="cuda"), theirs)
    results_store._write(
        fake_run("r3", "box4090", "bbbb", 420.0, device="cuda", created="2026-02-01T00:00:00Z"), theirs
    )
    (theirs / "junk.json").write_text("{not json")
    out = results_store.import_runs([theirs], mine)
    assert out["added"] == 2 and len(out["problems"]) == 1
    assert results_store.import_runs([theirs], mine)["already_present"] == 2
    runs, problems = results_store.load_runs(mine)
    assert [r["id"] for r in runs] == ["r1", "r2", "r3"] and problems == []
    table = results_store.compare(runs)
    assert len(table["devices"]) == 2
    (row,) = table["rows"]
    cells = row["devices"]
    assert (
        cells["aaaa:cpu"]["decode_tok_s"] == 50.0 and cells["bbbb:cuda"]["decode_tok_s"] == 420.0
    )  # latest wins
    with pytest.raises(EdgekitError):
        results_store.import_runs([tmp_path / "nowhere"], mine)


# ---- a real measurement ------------------------------------------------------------------


@pytest.mark.llamacpp
def test_llamacpp_generate_tokens_exact_count(q4km):
    from edgekit.runtimes import llamacpp
    from edgekit.runtimes.base import NotSupported

    s = llamacpp.load(q4km, n_ctx=128, threads=2, scoring=False, device="cpu")
    try:
        assert s.device == "cpu"
        toks = s.tokenize("The quick brown fox jumps over the lazy dog. " * 4)[:40]
        g = s.generate_tokens(toks, 12)
        assert g.generated_tokens == 12 and g.prompt_tokens == 40 and g.batch == 1
        assert g.prompt_s > 0 and g.decode_s > 0 and g.decode_tok_s > 0
        g2 = s.generate_tokens(toks, 12)  # no prefix reuse: the prompt is evaluated again
        assert g2.generated_tokens == 12
        with pytest.raises(NotSupported):
            s.generate_tokens(toks, 4, batch=2)
        with pytest.raises(EdgekitError):
            s.generate_tokens(toks, 5000)  # does not fit the context
    finally:
        s.close()


@pytest.mark.llamacpp
@pytest.mark.slow
def test_bench_q4km_through_the_registry(q4km, tmp_path):
    from edgekit.bench.speed import bench

    st = Settings(prompt_tokens=64, gen_tokens=16, batches=(1, 4), repeats=2, warmup=1, threads=2)
    r = bench(str(q4km), settings=st, label="test-box", store=tmp_path / "store")
    assert r.runtime["name"] == "llama.cpp" and r.device == "cpu" and r.subject["format"] == "gguf:Q4_K_M"
    b1, b4 = r.batch(1), r.batch(4)
    assert b1.measured and b1.decode_tok_s.n == 2 and b1.decode_tok_s.median > 0 and b1.ttft_s.median > 0
    assert (
        b1.prefill_tok_s.median > 0 and b1.decode_tok_s.min <= b1.decode_tok_s.median <= b1.decode_tok_s.max
    )
    assert not b4.measured and "one sequence" in b4.reason
    # roofline against the planner's bytes per token at 20 GB/s
    roof = b1.roofline
    assert roof["bandwidth_gbs"] == 20.0 and roof["bytes_per_token"] > 50e6 and 0 < roof["fraction"] < 2
    p = r.planner
    assert p["measured_peak_bytes"] == r.peak_rss_bytes > q4km.stat().st_size // 2
    assert 0.3 < p["predicted_over_measured"] < 5 and p["target"] == "cpu"
    assert r.peak_vram_bytes is None and r.load_s > 0
    d = json.loads(json.dumps(r.to_dict()))
    assert (
        d["schema"] == "edgekit.bench/1"
        and d["method"]["roofline"]
        and d["tool_versions"]["llama-cpp-python"]
    )
    assert d["host"]["label"] == "test-box" and d["settings"]["n_ctx"] == 80
    runs, _ = results_store.load_runs(tmp_path / "store")
    assert [x["id"] for x in runs] == [r.id]


@pytest.mark.llamacpp
def test_bench_errors_are_one_line(q4km, tmp_path):
    from edgekit.bench.speed import bench
    from edgekit.errors import UnknownName
    from edgekit.runtimes.registry import RuntimeUnavailable

    with pytest.raises(EdgekitError, match="no such file"):
        bench(str(tmp_path / "missing.gguf"), save=False)
    with pytest.raises(UnknownName) as e:
        bench(str(q4km), runtime="llamacp", save=False)
    assert "llama.cpp" in e.value.one_line()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(EdgekitError):
        bench(str(bad), save=False)
    try:
        bench(str(q4km), runtime="onnxruntime", save=False)
    except RuntimeUnavailable as e:
        assert "onnxruntime" in e.one_line() and "\n" not in e.one_line()
    except EdgekitError as e:  # once it exists: it does not serve GGUF
        assert "does not serve" in e.one_line()


# ---- on a GPU ----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not has_nvml_gpu(), reason="needs an NVIDIA GPU with NVML (pip install 'edgekit[nvml]')")
def test_nvml_reads_the_real_gpu():
    h = devmod.detect()
    g = h.gpus[0]
    assert g.memory_bytes > 2**30 and g.compute_capability and g.compute_capability >= (3, 0) and g.name
    s = devmod.VramSampler()
    assert s.ok and s.sample() >= 0
    s.close()


@pytest.mark.gpu
@pytest.mark.llamacpp
@pytest.mark.skipif(not has_nvml_gpu(), reason="needs an NVIDIA GPU with NVML")
def test_bench_on_the_gpu_reports_vram(q4km, tmp_path):
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build has no GPU offload")
    from edgekit.bench.speed import bench

    r = bench(
        str(q4km), settings=Settings(prompt_tokens=64, gen_tokens=16, repeats=1, device="cuda"), save=False
    )
    assert r.device == "cuda" and r.peak_vram_bytes and r.peak_vram_bytes > q4km.stat().st_size // 2
