"""GPTQ / AWQ / FP8 through llm-compressor on the tiny fixtures: every format quantizes on the
CPU, loads in the transformers runtime (checked against the checkpoint itself), and is scored
by the quality store against the same reference as the GGUF candidates."""

import json
import os
import subprocess
import sys

import pytest

from edgekit.errors import EdgekitError
from edgekit.formats import get_format

pytestmark = [pytest.mark.torch, pytest.mark.llamacpp, pytest.mark.slow]

FORMATS_DENSE = ("gptq:w4g128", "gptq:w8g128", "awq:w4g128", "fp8:dynamic", "fp8:block128")
FORMATS_MOE = ("gptq:w4g128", "awq:w4g128", "fp8:dynamic", "fp8:block128")
SAMPLES = 1  # one 512-token calibration window: enough for 2-layer models, keeps AWQ's grid search short


@pytest.fixture(autouse=True)
def _need_llmcompressor():
    pytest.importorskip("llmcompressor", reason="needs the quant extra (llm-compressor)")


def _ck(path):
    from edgekit.models.source import open_checkpoint

    return open_checkpoint(str(path))


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_qwen3, tiny_qwen3_moe):
    """Every (model, format) artifact, built once for the module."""
    from edgekit.formats import BuildOptions, build

    out = tmp_path_factory.mktemp("ct-artifacts")
    arts = {}
    for name, path, fmts in (("dense", tiny_qwen3, FORMATS_DENSE), ("moe", tiny_qwen3_moe, FORMATS_MOE)):
        ck = _ck(path)
        for f in fmts:
            fmt = get_format(f)
            opts = BuildOptions(samples=SAMPLES if fmt.impl.takes_calibration(fmt) else None)
            arts[name, f] = build(ck, fmt, out / name, opts)
    return arts


@pytest.fixture(scope="module")
def stores(tiny_qwen3, tiny_qwen3_moe):
    from edgekit.bench.reference import reference_store
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text()[:6000]
    return {
        "dense": reference_store(_ck(tiny_qwen3), text),
        "moe": reference_store(_ck(tiny_qwen3_moe), text),
    }


def _keys(art):
    from safetensors import safe_open

    keys = {}
    for f in art.path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                keys[k] = fh.get_slice(k).get_dtype()
    return keys


@pytest.mark.parametrize("model", ["dense", "moe"])
def test_every_format_quantizes_loads_and_scores(built, stores, model):
    from edgekit.bench.reference import score_artifact

    results = {}
    for (m, f), art in built.items():
        if m != model:
            continue
        man = art.manifest.to_dict()
        assert man["format"] == f and man["layout"] == "compressed-tensors"
        assert man["size_bytes"] == sum(p.stat().st_size for p in art.path.iterdir() if p.is_file())
        cfg = json.loads((art.path / "config.json").read_text())
        assert cfg["quantization_config"]["quant_method"] == "compressed-tensors"
        assert man["tool_versions"]["llmcompressor"] and man["tool_versions"]["compressed-tensors"]
        assert (man["recipe"]["calibration"] is None) == f.startswith("fp8")
        q = score_artifact(art, stores[model])
        results[f] = q
        # quantized, so not identical to the reference; yet close to it on these smooth tiny models
        assert 0 < q.kld_mean < 0.02, (f, q.kld_mean)
        assert q.same_top > 0.9, (f, q.same_top)
    if model == "dense":  # 8-bit weights lose less than 4-bit ones, with the same algorithm
        assert results["gptq:w8g128"].kld_mean < results["gptq:w4g128"].kld_mean


def test_sizes_on_disk_match_the_planner(built, tiny_qwen3):
    """The planner's per-tensor size model against the real compressed-tensors files."""
    ck = _ck(tiny_qwen3)
    for (m, f), art in built.items():
        if m != "dense":
            continue
        planned = get_format(f).weight_bytes(ck.entry.arch)
        tensors_bytes = sum(p.stat().st_size for p in art.path.glob("*.safetensors"))
        # the files also hold small shape tensors and a JSON header
        assert abs(tensors_bytes - planned) / planned < 0.03, (f, tensors_bytes, planned)


def test_moe_routers_norms_and_head_stay_unquantized(built):
    for f in FORMATS_MOE:
        keys = _keys(built["moe", f])
        routers = [k for k in keys if k.endswith("mlp.gate.weight")]
        assert len(routers) == 2  # one per layer, kept whole
        for k in routers + [
            k for k in keys if k.endswith(("q_norm.weight", "k_norm.weight", "layernorm.weight"))
        ]:
            assert keys[k] in ("BF16", "F32"), (f, k, keys[k])
            assert k.removesuffix(".weight") + ".weight_scale" not in keys
        assert keys["lm_head.weight"] == "BF16" and "lm_head.weight_scale" not in keys
        assert "model.embed_tokens.weight_scale" not in keys
        experts = {k for k in keys if ".experts." in k and k.endswith("weight_scale")}
        assert len(experts) == 2 * 8 * 3, f  # every expert of every layer is quantized


def test_expert_coverage_lists_experts_without_tokens(tiny_qwen3_moe, tmp_path):
    """One token repeated routes almost every position the same way: most experts see nothing,
    and the manifest must say which."""
    from edgekit.formats import BuildOptions, build

    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(["edgekit"] * 200))
    art = build(
        _ck(tiny_qwen3_moe),
        get_format("gptq:w4g128"),
        tmp_path / "out",
        BuildOptions(calibration=str(calib), samples=1),
    )
    cov = art.manifest.recipe["expert_coverage"]
    assert cov["layers"] == 2 and cov["experts_per_layer"] == 8
    tokens = art.manifest.recipe["calibration_tokens"]
    for layer, counts in cov["tokens_per_expert"].items():
        assert sum(counts) == tokens * 2  # top-2 routing
        assert cov["unseen_experts"].get(layer, []) == [i for i, c in enumerate(counts) if c == 0]
    assert cov["unseen_experts"], "a single repeated token should leave some experts unrouted"
    assert art.manifest.recipe["moe_calibrate_all_experts"] is True


def test_random_experts_are_caught(built):
    """The failure that loaders hide: experts left at other values than the checkpoint's."""
    import torch

    from edgekit.runtimes import transformers as rt
    from edgekit.runtimes.ct_checkpoint import verify_against_checkpoint

    art = built["moe", "gptq:w4g128"]
    s = rt.load(art.path)
    assert verify_against_checkpoint(s.model, art.path)["checked_modules"] > 0
    experts = next(m for n, m in s.model.named_modules() if n.endswith("layers.1.mlp.experts"))
    with torch.no_grad():
        for p in experts.parameters():
            p.normal_()
    with pytest.raises(EdgekitError, match="differ from the checkpoint"):
        verify_against_checkpoint(s.model, art.path)


def test_checkpoint_with_renamed_expert_tensors_is_refused(built, copy_dir):
    from safetensors.torch import load_file, save_file

    from edgekit.runtimes import transformers as rt

    d = copy_dir(built["moe", "fp8:dynamic"].path)
    f = next(d.glob("*.safetensors"))
    t = load_file(str(f))
    t = {k.replace(".experts.3.", ".expert_3."): v for k, v in t.items()}
    save_file(t, str(f), metadata={"format": "pt"})
    with pytest.raises(EdgekitError):
        rt.load(d)


def test_transformers_runtime_generates_with_timings(built):
    from edgekit.runtimes import transformers as rt

    s = rt.load(built["dense", "fp8:dynamic"].path)
    g = s.generate("def main", max_tokens=8)
    assert 1 <= g.generated_tokens <= 8 and g.prompt_tokens > 0
    assert g.prompt_s > 0 and g.load_s > 0
    assert s.logits(s.tokenize("edgekit plans"))[0].shape == (s.n_vocab,)


def _edgekit(*args):
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _one_line(r, *needles):
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith(("resolving", "202"))]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_awq_without_calibration_text_says_what_works(tiny_qwen3, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    r = _edgekit(
        "quantize",
        str(tiny_qwen3),
        "--format",
        "awq:w4g128",
        "--calibration",
        str(empty),
        "--out",
        str(tmp_path / "out"),
    )
    _one_line(r, "empty", "fp8:dynamic")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fp8_w8a8_below_cc_89_says_what_works(tiny_qwen3, tmp_path):
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "a100.toml").write_text(
        'name = "a100"\nkind = "gpu"\nmemory_gib = 80\nbandwidth_gbs = 2039\ncompute_capability = "8.0"\n'
        "[tflops]\nbf16 = 312\nfp16 = 312\nint8 = 624\n"
    )
    env_dir = os.environ["EDGEKIT_CONFIG_DIR"]
    os.environ["EDGEKIT_CONFIG_DIR"] = str(tmp_path)
    try:
        r = _edgekit(
            "quantize",
            str(tiny_qwen3),
            "--target",
            "a100",
            "--formats",
            "fp8:dynamic",
            "--out",
            str(tmp_path / "runs"),
        )
    finally:
        os.environ["EDGEKIT_CONFIG_DIR"] = env_dir
    _one_line(r, "8.9", "gptq:w8g128")
    assert not (tmp_path / "runs").exists()


def test_unsupported_architecture_says_what_works():
    from edgekit.models.catalogue import resolve

    fmt = get_format("gptq:w4g128")  # the check reads the catalogue entry only
    fmt.impl.check_architecture(fmt, resolve("phi-3.5-mini"))  # phi3 is covered now
    with pytest.raises(EdgekitError, match="not available for architecture 'dbrx'") as e:
        fmt.impl.check_architecture(fmt, resolve("dbrx"))
    assert "quantizes" in e.value.one_line()  # nothing else does: say what this path covers


def test_group_size_that_does_not_divide_suggests_one_that_does(smollm2_checkpoint):
    def check_groups(ck, fmt):
        fmt.impl.check_shapes(fmt, ck.entry)

    with pytest.raises(EdgekitError, match="576") as e:
        check_groups(smollm2_checkpoint, get_format("gptq:w4g128"))
    assert "gptq:w4g64" in e.value.one_line()
    check_groups(smollm2_checkpoint, get_format("awq:w4g64"))  # 576 and 1536 are multiples of 64
    with pytest.raises(EdgekitError, match="128x128 block") as e:  # 576 and k_proj's 192 are not
        check_groups(smollm2_checkpoint, get_format("fp8:block128"))
    assert "fp8:dynamic" in e.value.one_line()


@pytest.mark.gpu
def test_vllm_loads_fp8_and_w4a16_and_generates(built):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    vllm = pytest.importorskip("vllm", reason="vLLM is installed on GPU machines only")
    for f in ("fp8:dynamic", "gptq:w4g128"):
        llm = vllm.LLM(
            model=str(built["dense", f].path),
            max_model_len=512,
            gpu_memory_utilization=0.3,
            enforce_eager=True,
        )
        out = llm.generate(["def main"], vllm.SamplingParams(max_tokens=8, temperature=0))
        assert out[0].outputs[0].token_ids
        del llm


def test_main_job_scores_gguf_and_safetensors_candidates_on_one_store(tiny_qwen3, tmp_path):
    """One metric for every family: a GGUF and an FP8 candidate measured against the same
    store, with the runtime floor (the unquantized model in transformers) reported."""
    from edgekit.bench.mainjob import run_main_job

    reports = {}
    for f in ("fp8:dynamic", "gguf:Q8_0"):
        rep = run_main_job(
            str(tiny_qwen3), "cpu", "kld<=0.01", formats=[f], out_dir=tmp_path / f.replace(":", "-")
        )
        reports[f] = json.loads((rep.run_dir / "report.json").read_text())
    fp8, q8 = reports["fp8:dynamic"], reports["gguf:Q8_0"]
    assert fp8["candidates"][0]["artifact"]["runtime"] == "transformers" and fp8["pick"] == "fp8:dynamic"
    assert q8["candidates"][0]["artifact"]["runtime"] == "llama.cpp" and q8["pick"] == "gguf:Q8_0"
    assert 0 <= fp8["reference"]["runtime_floor_kld"] < 1e-6
    assert q8["reference"]["runtime_floor_kld"] is None  # no transformers candidate, no floor needed
    assert fp8["reference"]["positions"] == q8["reference"]["positions"]
    assert fp8["reference"]["ppl"] == q8["reference"]["ppl"]


def test_main_job_marks_formats_a_model_cannot_take(smollm2_checkpoint):
    from edgekit.bench.mainjob import _unbuildable

    assert "576" in _unbuildable(smollm2_checkpoint, get_format("gptq:w4g128"))
    assert _unbuildable(smollm2_checkpoint, get_format("gptq:w4g64")) == ""
