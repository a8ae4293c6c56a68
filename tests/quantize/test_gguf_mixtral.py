"""Mixtral through the one-pass converter (issue 14): a tiny random-weight MixtralForCausalLM
(per-expert block_sparse_moe weights) converts to a LLAMA GGUF with stacked experts whose
llama.cpp logits are transformers', whose mixes are llama.cpp's own quantizer's bytes, and
whose tensor table is the planner's inventory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.quantize.gguf_util import assert_same_as_llama_quantize

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def build_tiny_mixtral(out: Path, tokenizer_dir: Path, steps: int = 30, seed: int = 0) -> Path:
    """2 layers, hidden 256 (k-quants apply without fallback), 4 experts of width 256, top-2,
    trained a few steps on our own sources so the logits are not flat."""
    import torch
    from tokenizers import Tokenizer
    from transformers import MixtralConfig, MixtralForCausalLM

    from tests.tiny_models import save_checkpoint, train

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cfg = MixtralConfig(
        vocab_size=640,  # larger than the tokenizer: llama.cpp sees padding tokens too
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=2048,
        rope_theta=1e6,
        tie_word_embeddings=False,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        bos_token_id=None,
    )
    model = MixtralForCausalLM(cfg)
    train(model, tok, steps, windows=32)
    return save_checkpoint(model, tokenizer_dir, out)


@pytest.fixture(scope="module")
def tiny_mixtral(tmp_path_factory, tiny_tokenizer):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_mixtral(tmp_path_factory.mktemp("tiny-mixtral"), tiny_tokenizer)


@pytest.fixture(scope="module")
def mixtral_f32(tiny_mixtral, tmp_path_factory):
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    ck = _local(Path(tiny_mixtral), origin="local")
    out = tmp_path_factory.mktemp("f32") / "tiny-mixtral-F32.gguf"
    convert(ck, out, Recipe(mix="F32"))
    return ck, out


def test_the_checkpoint_has_per_expert_weights(tiny_mixtral):
    from edgekit.models.weights import SafetensorsCheckpoint

    w = SafetensorsCheckpoint(sorted(Path(tiny_mixtral).glob("*.safetensors")))
    try:
        names = set(w.names())
    finally:
        w.close()
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in names
    assert "model.layers.0.block_sparse_moe.gate.weight" in names
    assert json.loads((Path(tiny_mixtral) / "config.json").read_text())["model_type"] == "mixtral"


def test_planner_inventory_is_the_file_tensor_table(mixtral_f32):
    from gguf import GGUFReader

    ck, path = mixtral_f32
    planned = [(t.name, t.shape) for t in ck.entry.arch.tensors()]
    written = [(t.name, tuple(int(d) for d in t.shape)) for t in GGUFReader(path).tensors]
    assert sorted(written) == sorted(planned)
    assert ("blk.1.ffn_down_exps.weight", (256, 256, 4)) in written
    assert ("blk.0.ffn_gate_inp.weight", (256, 4)) in written


def test_llama_cpp_reads_it_as_a_llama_with_experts(mixtral_f32):
    from edgekit.runtimes import llamacpp

    _, path = mixtral_f32
    session = llamacpp.load(path, n_ctx=256)
    try:
        meta = session.llm.metadata
    finally:
        session.close()
    assert meta["general.architecture"] == "llama"
    assert meta["llama.expert_count"] == "4"
    assert meta["llama.expert_used_count"] == "2"
    assert meta["llama.feed_forward_length"] == "256"
    assert meta["llama.rope.dimension_count"] == "64"
    assert meta["llama.attention.head_count_kv"] == "2"


def test_f32_logits_match_transformers(mixtral_f32, record_property):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    ck, path = mixtral_f32
    session = llamacpp.load(path, n_ctx=512)
    try:
        ids = session.tokenize(default_evaluation_text())[:384]
        ours = session.logits(ids)
    finally:
        session.close()
    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()[:, : ours.shape[1]]
    top1 = float((ours.argmax(1) == ref.argmax(1)).mean())
    max_abs = float(np.abs(ours - ref).max())
    record_property("max_abs_logit_diff", max_abs)
    print(f"mixtral: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e}, logit std {ref.std():.3f}")
    assert float(ref.std()) > 0.5  # the logits are not flat
    assert top1 >= 0.99
    assert max_abs < 0.05 * float(ref.std())


@pytest.fixture(scope="module")
def mixtral_imatrix(mixtral_f32):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    ck, _ = mixtral_f32
    return imatrix.collect(ck, default_calibration_text(), ctx=256, max_chunks=4).importances()


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_one_pass_is_byte_identical_to_llama_quantize(mix, with_imatrix, mixtral_f32, request, tmp_path):
    ck, f32 = mixtral_f32
    imp = request.getfixturevalue("mixtral_imatrix") if with_imatrix else None
    if imp is not None:
        assert {n for n in imp if "_exps" in n} >= {
            "blk.0.ffn_gate_exps.weight",
            "blk.1.ffn_down_exps.weight",
        }
    assert_same_as_llama_quantize(ck, f32, mix, imp, tmp_path)
