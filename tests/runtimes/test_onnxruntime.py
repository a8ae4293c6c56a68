"""The onnxruntime runtime and the ONNX export (edgekit.runtimes.onnxruntime, edgekit.quantize.onnx_export).

The tiny Qwen3 / Qwen3-MoE fixtures are exported with torch.onnx (dynamo) and compared with
transformers in float32 on the same tokens; the KV-cache decoding is compared with greedy
argmax over full recomputation; int8 / int4 exports must be close but not identical; the
quality store scores an ONNX session like any other. CUDA tests skip without a GPU; the
silent CPU fallback of a CUDA provider is simulated so its check runs everywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import EdgekitError


def _need_onnx():
    pytest.importorskip("onnxruntime", reason='needs the onnx extra (pip install "edgekit[onnx]")')
    pytest.importorskip("onnx", reason='needs the onnx extra (pip install "edgekit[onnx]")')


def _need_export():
    _need_onnx()
    pytest.importorskip("onnxscript", reason='needs the onnx extra (pip install "edgekit[onnx]")')
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


# ---- contract, errors (fast) ------------------------------------------------------------------


def test_module_follows_the_runtime_contract():
    from edgekit.runtimes import onnxruntime as rt
    from edgekit.runtimes.base import REQUIRED_ATTRIBUTES

    for attr in REQUIRED_ATTRIBUTES:
        assert hasattr(rt, attr), attr
    assert rt.name == "onnxruntime" and rt.extra == "onnx"
    assert set(rt.devices) == {"cpu", "cuda"}
    assert "onnx" in rt.formats and "bf16" in rt.formats
    ok, why = rt.available()
    assert isinstance(ok, bool) and why and "\n" not in why


def test_registry_lists_it():
    from edgekit.runtimes import registry

    info = registry.find("onnxruntime")
    assert info.serves("onnx:int4") and info.serves("onnx:fp32") and info.serves("bf16")
    assert not info.serves("gguf:Q4_K_M")


def test_both_onnxruntime_packages_installed_is_refused(monkeypatch):
    from edgekit.runtimes import onnxruntime as rt

    monkeypatch.setattr(rt, "_installed", lambda dist: "1.32.0")
    ok, why = rt.available()
    assert not ok and "onnxruntime-gpu" in why and "\n" not in why


@pytest.mark.parametrize("bad", ["missing", "file", "emptydir", "device"])
def test_bad_input_is_one_line_error(tmp_path, bad):
    _need_onnx()
    from edgekit.runtimes import onnxruntime as rt

    kwargs = {}
    if bad == "missing":
        path = tmp_path / "nope"
    elif bad == "file":
        path = tmp_path / "weights.bin"
        path.write_bytes(b"x")
    elif bad == "emptydir":
        path = tmp_path / "empty"
        path.mkdir()
    else:
        path, kwargs = tmp_path, {"device": "tpu"}
    with pytest.raises(EdgekitError) as e:
        rt.load(path, **kwargs)
    assert "\n" not in e.value.one_line()


def test_export_rejects_bad_precision_and_quantized_checkpoints(tmp_path):
    from edgekit.quantize.onnx_export import export

    with pytest.raises(EdgekitError, match="precision"):
        export(tmp_path, tmp_path / "out", "int3")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(
        json.dumps({"model_type": "qwen3", "quantization_config": {"quant_method": "gptq"}})
    )
    (ck / "model.safetensors").write_bytes(b"")
    _need_export()
    with pytest.raises(EdgekitError, match="quantized checkpoint"):
        export(ck, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


# ---- the tiny models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_dirs(tmp_path_factory, tiny_qwen3):
    """fp32 export of the tiny Qwen3, and int8 / int4 quantized from it."""
    _need_export()
    import time

    from edgekit.quantize.onnx_export import default_name, export

    out = tmp_path_factory.mktemp("onnx")
    t0 = time.perf_counter()
    arts = {"fp32": export(tiny_qwen3, out / default_name("tiny-qwen3", "fp32"), "fp32")}
    seconds = {"fp32": time.perf_counter() - t0}
    for p in ("int8", "int4"):
        t0 = time.perf_counter()
        arts[p] = export(arts["fp32"].path, out / default_name("tiny-qwen3", p), p)
        seconds[p] = time.perf_counter() - t0
    print(f"\nexport seconds (tiny qwen3): {', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}")
    return arts


@pytest.fixture(scope="module")
def reference(tiny_qwen3):
    """transformers, float32, on the same checkpoint; and the tokens compared."""
    _need_export()
    from edgekit.bench._child import prompt_tokens
    from edgekit.runtimes import transformers as trt

    s = trt.load(tiny_qwen3, dtype="float32")
    toks = prompt_tokens(s, 300)
    yield s, toks
    s.close()


def _load(art):
    from edgekit.runtimes import onnxruntime as rt

    return rt.load(art.path, device="cpu")


@pytest.mark.torch
@pytest.mark.slow
def test_export_writes_an_artifact_with_a_manifest(onnx_dirs):
    from edgekit.artifact import load_artifact
    from edgekit.quantize.onnx_export import INFO_FILE

    for p, art in onnx_dirs.items():
        names = {f.name for f in art.path.iterdir()}
        assert {"model.onnx", "config.json", "tokenizer.json", INFO_FILE} <= names, names
        again = load_artifact(art.path)
        assert again is not None and again.format == f"onnx:{p}"
        m = art.manifest
        assert m.layout == "onnx" and m.source["revision"] and m.tool_versions["onnxruntime"]
        assert m.bits_per_weight is None or m.bits_per_weight > 0
        assert not list(art.path.parent.glob(f".{art.path.name}.*")), "temporary directory left behind"
    check = onnx_dirs["fp32"].manifest.recipe["check"]
    assert check["same_top1"] == 1.0 and check["max_abs_diff"] < 1e-4
    assert onnx_dirs["int8"].manifest.recipe["quantized_nodes"] == {"MatMulNBits": 15}
    assert onnx_dirs["int4"].manifest.recipe["quantized_nodes"] == {"MatMulNBits": 15}  # 2 x 7 + lm_head
    sizes = {p: a.size_bytes for p, a in onnx_dirs.items()}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"], sizes


@pytest.mark.torch
@pytest.mark.slow
def test_export_is_reused_unless_forced(onnx_dirs, tiny_qwen3):
    from edgekit.quantize.onnx_export import export

    art = onnx_dirs["fp32"]
    mtime = (art.path / "model.onnx").stat().st_mtime_ns
    again = export(tiny_qwen3, art.path, "fp32")
    assert (again.path / "model.onnx").stat().st_mtime_ns == mtime


@pytest.mark.torch
@pytest.mark.slow
def test_fp32_logits_equal_transformers(onnx_dirs, reference, record_property):
    ref, toks = reference
    s = _load(onnx_dirs["fp32"])
    try:
        assert s.tokenize("def load(path):\n    return 1") == ref.tokenize("def load(path):\n    return 1")
        assert s.n_vocab == ref.n_vocab == 640
        got, want = s.logits(toks), ref.logits(toks)
    finally:
        s.close()
    assert got.dtype == np.float32 and got.shape == want.shape == (len(toks), 640)
    diff = float(np.abs(got - want).max())
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    record_property("fp32_max_abs_diff", diff)
    print(f"\nonnx:fp32 vs transformers float32, {len(toks)} tokens: max |diff| {diff:.2e}, top-1 {top1:.4f}")
    assert top1 >= 0.99
    assert diff < 1e-4


@pytest.mark.torch
@pytest.mark.slow
def test_kv_cache_decoding_equals_greedy_recomputation(onnx_dirs, reference):
    _, toks = reference
    for p in ("fp32", "int4"):
        s = _load(onnx_dirs[p])
        try:
            prompt = toks[:40]
            cached = s.greedy(prompt, 6)
            seq, plain = list(prompt), []
            for _ in range(6):
                t = int(s.logits(seq)[-1].argmax())
                plain.append(t)
                seq.append(t)
        finally:
            s.close()
        assert cached == plain, p


@pytest.mark.torch
@pytest.mark.slow
def test_generate_matches_transformers_and_is_timed(onnx_dirs, reference):
    ref, toks = reference
    s = _load(onnx_dirs["fp32"])
    try:
        prompt = "def load(path, **options):\n"
        g, r = s.generate(prompt, 12), ref.generate(prompt, 12)
        assert g.text == r.text and g.generated_tokens == r.generated_tokens
        assert g.prompt_tokens == r.prompt_tokens and g.prompt_s > 0 and g.decode_s >= 0
        assert g.extra["providers"][0] == "CPUExecutionProvider" and s.device == "cpu"
        for batch in (1, 3):
            gt = s.generate_tokens(toks[:64], 8, batch=batch)
            assert (gt.generated_tokens, gt.prompt_tokens, gt.batch) == (8, 64, batch)
            assert gt.prompt_s > 0 and gt.decode_s > 0
        with pytest.raises(EdgekitError):
            s.generate_tokens(toks[:8], 0)
        with pytest.raises(EdgekitError):
            s.logits([10**6])
    finally:
        s.close()


@pytest.mark.torch
@pytest.mark.slow
def test_int8_and_int4_are_close_but_not_identical(onnx_dirs, reference, record_property):
    from edgekit.bench.quality import log_softmax_rows

    ref, toks = reference
    want = ref.logits(toks)
    lp = log_softmax_rows(want).astype(np.float64)
    for p in ("int8", "int4"):
        s = _load(onnx_dirs[p])
        try:
            got = s.logits(toks)
        finally:
            s.close()
        lq = log_softmax_rows(got).astype(np.float64)
        kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
        top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
        diff = float(np.abs(got - want).max())
        record_property(f"{p}_kl", kl)
        print(f"\nonnx:{p} vs transformers: KL {kl:.2e}, top-1 {top1:.3f}, max |diff| {diff:.3f}")
        assert diff > 1e-3, f"{p} gives the fp32 logits: nothing was quantized"
        assert top1 >= 0.85 and kl < 0.05


@pytest.mark.torch
@pytest.mark.llamacpp
@pytest.mark.slow
def test_quality_store_scores_an_onnx_session(onnx_dirs, tiny_qwen3):
    pytest.importorskip("llama_cpp", reason="the reference store is built with llama.cpp")
    from edgekit.bench.quality import score
    from edgekit.bench.reference import reference_store
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text

    store = reference_store(open_checkpoint(str(tiny_qwen3)), default_evaluation_text()[:6000])
    results = {}
    for p in ("fp32", "int4"):
        s = _load(onnx_dirs[p])
        try:
            results[p] = score(s, store)
        finally:
            s.close()
    print(
        f"\nquality vs the reference store: fp32 KLD {results['fp32'].kld_mean:.2e}, "
        f"int4 KLD {results['int4'].kld_mean:.2e}"
    )
    assert results["fp32"].kld_mean < 1e-4 and results["fp32"].same_top > 0.99
    assert results["fp32"].kld_mean < results["int4"].kld_mean < 0.05
    assert abs(results["fp32"].ppl_ratio - 1) < 1e-3


@pytest.mark.torch
@pytest.mark.slow
def test_loading_a_checkpoint_exports_once_into_the_cache(tiny_qwen3, monkeypatch):
    _need_export()
    from edgekit.runtimes import onnxruntime as rt

    s = rt.load(tiny_qwen3)
    try:
        assert s.exported_from == tiny_qwen3 and s.format == "onnx:fp32"
        assert s.path == rt.export_path(tiny_qwen3)
        assert s.path.parent.name == "onnx"
        first = s.logits([1, 2, 3])
    finally:
        s.close()

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(rt.subprocess, "run", no_export)
    assert rt.prepare(tiny_qwen3) == rt.export_path(tiny_qwen3)
    s = rt.load(tiny_qwen3)
    try:
        assert np.array_equal(s.logits([1, 2, 3]), first)
    finally:
        s.close()


@pytest.mark.torch
@pytest.mark.slow
def test_moe_exports_with_exact_logits_and_refuses_int_formats(tmp_path, tiny_qwen3_moe):
    _need_export()
    from edgekit.quantize.onnx_export import export
    from edgekit.runtimes import onnxruntime as rt
    from edgekit.runtimes import transformers as trt

    art = export(tiny_qwen3_moe, tmp_path / "moe-fp32", "fp32")
    ref = trt.load(tiny_qwen3_moe, dtype="float32")
    s = rt.load(art.path)
    try:
        toks = ref.tokenize("class Runtime(Protocol):\n    name: str\n    formats: tuple[str, ...]\n" * 4)
        got, want = s.logits(toks), ref.logits(toks)
        assert s.greedy(toks[:10], 4) == [int(x) for x in _greedy_nocache(s, toks[:10], 4)]
    finally:
        s.close()
        ref.close()
    diff = float(np.abs(got - want).max())
    print(f"\nonnx:fp32 MoE vs transformers float32: max |diff| {diff:.2e}")
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.99 and diff < 1e-4
    with pytest.raises(EdgekitError, match="mixture-of-experts"):
        export(art.path, tmp_path / "moe-int4", "int4")


def _greedy_nocache(s, prompt, n):
    seq, out = list(prompt), []
    for _ in range(n):
        t = int(s.logits(seq)[-1].argmax())
        out.append(t)
        seq.append(t)
    return out


# ---- providers -----------------------------------------------------------------------------------


def _has_cuda_provider() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_cuda_request_without_the_provider_names_onnxruntime_gpu(tmp_path):
    _need_onnx()
    if _has_cuda_provider():
        pytest.skip("this onnxruntime has the CUDA provider")
    from edgekit.runtimes import onnxruntime as rt

    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(EdgekitError) as e:
        rt.load(tmp_path, device="cuda")
    assert "onnxruntime-gpu" in e.value.one_line()


@pytest.mark.torch
@pytest.mark.slow
def test_silent_cpu_fallback_of_cuda_is_an_error(onnx_dirs, monkeypatch):
    """onnxruntime-gpu without its CUDA libraries runs on the CPU without an error; simulated."""
    import onnxruntime as ort

    from edgekit.runtimes import onnxruntime as rt

    real = ort.InferenceSession

    def fallback(path, opts=None, providers=None):
        return real(path, opts, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", fallback)
    with pytest.raises(
        EdgekitError, match="CUDAExecutionProvider was asked for but onnxruntime runs CPUExecutionProvider"
    ):
        rt.load(onnx_dirs["fp32"].path, device="cuda")


@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.slow
def test_cuda_provider_runs_the_export(onnx_dirs):
    if not _has_cuda_provider():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and a GPU")
    from edgekit.runtimes import onnxruntime as rt

    try:
        s = rt.load(onnx_dirs["fp32"].path, device="cuda")
    except EdgekitError as e:
        pytest.skip(f"no usable CUDA provider here: {e.one_line()}")
    cpu = rt.load(onnx_dirs["fp32"].path, device="cpu")
    try:
        assert s.device == "cuda" and s.providers[0] == "CUDAExecutionProvider"
        toks = list(range(3, 80))
        got, want = s.logits(toks), cpu.logits(toks)
        assert float(np.abs(got - want).max()) < 1e-2
        assert s.greedy(toks[:20], 6) == cpu.greedy(toks[:20], 6)
        g = s.generate_tokens(toks, 8, batch=2)
        assert g.generated_tokens == 8 and g.extra["device"] == "cuda"
    finally:
        s.close()
        cpu.close()
