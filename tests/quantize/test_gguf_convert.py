"""The one-pass converter against the references: transformers' logits and llama.cpp's own
quantizer (llama_model_quantize on an F32 GGUF of the same checkpoint)."""

from pathlib import Path

import pytest

from tests.quantize.gguf_util import log_softmax, tensors_of

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

MODELS = ["tiny_qwen3", "tiny_qwen3_moe", "smollm2_checkpoint"]


def checkpoint(request, name):
    from edgekit.models.source import Checkpoint, _local

    v = request.getfixturevalue(name)
    return v if isinstance(v, Checkpoint) else _local(Path(v), origin="local")


@pytest.fixture(scope="module")
def f32_gguf(request, tmp_path_factory):
    from edgekit.quantize.gguf import Recipe, convert

    cache = {}

    def get(name):
        if name not in cache:
            ck = checkpoint(request, name)
            out = tmp_path_factory.mktemp("f32") / f"{name}-F32.gguf"
            convert(ck, out, Recipe(mix="F32"))
            cache[name] = (ck, out)
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_f32_gguf_logits_match_transformers(name, f32_gguf, record_property):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    ck, path = f32_gguf(name)
    session = llamacpp.load(path, n_ctx=512)
    ids = session.tokenize(default_evaluation_text())[:384]
    ours = session.logits(ids)
    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()[:, : ours.shape[1]]
    top1 = float((ours.argmax(1) == ref.argmax(1)).mean())
    max_abs = float(np.abs(ours - ref).max())
    record_property("max_abs_logit_diff", max_abs)
    print(f"{name}: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e}")
    assert top1 >= 0.99
    assert max_abs < 0.05 * float(ref.std())


@pytest.fixture(scope="module")
def tiny_imatrix(f32_gguf):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    cache = {}

    def get(name):
        if name not in cache:
            ck, _ = f32_gguf(name)
            cache[name] = imatrix.collect(ck, default_calibration_text(), ctx=256, max_chunks=4).importances()
        return cache[name]

    return get


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("mix", ["Q8_0", "Q6_K", "Q4_K_M", "Q2_K"])
@pytest.mark.parametrize("name", ["tiny_qwen3", "tiny_qwen3_moe"])
def test_one_pass_is_byte_identical_to_llama_quantize(
    name, mix, with_imatrix, f32_gguf, tiny_imatrix, tmp_path
):
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.quantize.gguf_twostep import llama_quantize

    ck, f32 = f32_gguf(name)
    imp = tiny_imatrix(name) if with_imatrix else None
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    convert(ck, one, Recipe(mix=mix, imatrix=imp))
    llama_quantize(f32, two, mix, imatrix=imp)
    a, b = tensors_of(one), tensors_of(two)
    assert set(a) == set(b)
    assert {n: a[n][0] for n in a} == {n: b[n][0] for n in b}
    assert [n for n in a if a[n][1] != b[n][1]] == []


@pytest.fixture(scope="module")
def smollm2_imatrix(smollm2_checkpoint):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    return imatrix.collect(smollm2_checkpoint, default_calibration_text(), ctx=512, max_chunks=4)


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["Q4_K_M", "Q2_K"])
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_smollm2_one_pass_identical_with_and_without_imatrix(
    mix, with_imatrix, f32_gguf, smollm2_imatrix, tmp_path
):
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.quantize.gguf_twostep import llama_quantize

    ck, f32 = f32_gguf("smollm2_checkpoint")
    imp = smollm2_imatrix.importances() if with_imatrix else None
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    convert(ck, one, Recipe(mix=mix, imatrix=imp))
    llama_quantize(f32, two, mix, imatrix=imp)
    a, b = tensors_of(one), tensors_of(two)
    assert set(a) == set(b) and [n for n in a if a[n] != b[n]] == []
    if mix == "Q4_K_M":
        # 576 and 1536 are not multiples of 256: most of "Q4_K_M" falls back to Q5_0 / Q8_0
        types = {t for t, _ in a.values()}
        assert {"Q5_0", "Q8_0", "Q6_K", "Q4_K"} <= types


def test_moe_imatrix_matches_llama_quantize_and_reports_unseen_experts(f32_gguf, tmp_path):
    from edgekit.quantize import imatrix
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.quantize.gguf_twostep import llama_quantize

    ck, f32 = f32_gguf("tiny_qwen3_moe")
    im = imatrix.collect(ck, "def f(x):\n    return x * 2\n" * 60, ctx=64, max_chunks=2)
    # 8 experts, top-2, a repetitive text: some experts see no token, and are reported
    unseen = im.unseen_experts()
    for name, experts in unseen.items():
        assert "_exps" in name and all(im.counts[name][e] == 0 for e in experts)
    saved = tmp_path / "m.imatrix.gguf"
    imatrix.save(im, saved)
    back = imatrix.load(saved)
    assert back.unseen_experts() == unseen and back.chunk_count == 2
    imp = back.importances()
    assert imp["blk.0.ffn_down_exps.weight"].size == 8 * 256
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    convert(ck, one, Recipe(mix="Q4_K_M", imatrix=imp))
    llama_quantize(f32, two, "Q4_K_M", imatrix=imp)
    assert tensors_of(one) == tensors_of(two)


def test_imatrix_file_is_read_by_llama_quantize_tool(f32_gguf, tmp_path):
    """llama.cpp's own CLI accepts the imatrix file edgekit writes."""
    import os
    import subprocess
    import sysconfig

    from edgekit.quantize import imatrix

    ck, f32 = f32_gguf("tiny_qwen3")
    im = imatrix.collect(ck, "alpha beta gamma delta " * 200, ctx=128, max_chunks=2)
    path = tmp_path / "x.imatrix.gguf"
    imatrix.save(im, path)
    site = Path(sysconfig.get_paths()["purelib"])
    tool = site / "bin" / "llama-quantize"
    if not tool.exists():
        pytest.skip("llama-quantize was not built with llama-cpp-python (LLAMA_BUILD_TOOLS)")
    env = {**os.environ, "LD_LIBRARY_PATH": str(site / "lib")}
    out = tmp_path / "q.gguf"
    r = subprocess.run(
        [str(tool), "--imatrix", str(path), str(f32), str(out), "Q4_K_M"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-500:]
    assert "imatrix" in (r.stdout + r.stderr)


@pytest.mark.slow
def test_smollm2_q4_k_m_is_coherent_and_imatrix_lowers_kld(f32_gguf, smollm2_imatrix, tmp_path):
    import numpy as np

    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    ck, f32 = f32_gguf("smollm2_checkpoint")
    plain, imat = tmp_path / "plain.gguf", tmp_path / "imat.gguf"
    convert(ck, plain, Recipe(mix="Q4_K_M"))
    convert(ck, imat, Recipe(mix="Q4_K_M", imatrix=smollm2_imatrix.importances()))

    s = llamacpp.load(imat, n_ctx=512)
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    g = s.generate(prompt, max_tokens=24)
    assert "Paris" in g.text, g.text

    ref = llamacpp.load(f32, n_ctx=512)
    ids = ref.tokenize(default_evaluation_text())[: 4 * 512]
    windows = [ids[i : i + 512] for i in range(0, len(ids), 512)]
    klds = {}
    for label, path in (("plain", plain), ("imatrix", imat)):
        q = llamacpp.load(path, n_ctx=512)
        kl = []
        for w in windows:
            p_log = log_softmax(ref.logits(w)[256:])
            q_log = log_softmax(q.logits(w)[256:])
            kl.append((np.exp(p_log) * (p_log - q_log)).sum(-1))
        klds[label] = float(np.concatenate(kl).mean())
    print(f"SmolLM2 Q4_K_M KLD vs BF16: {klds}")
    assert klds["imatrix"] < klds["plain"]
