"""Gemma 3 through the one-pass converter: a tiny random-weight Gemma3ForCausalLM (q/k norms,
pre and post norms around attention and the MLP, a tied embedding, sliding-window layers
with every 6th global and their own RoPE base) against transformers' logits, against
llama.cpp's own quantizer (llama_model_quantize of edgekit's F32 file), and against the
planner's tensor inventory; and the configs llama.cpp's GEMMA3 graph would read wrongly,
refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.quantize.gguf_logits import logits_agree, metadata, tensor_table
from tests.quantize.gguf_util import assert_same_as_llama_quantize, tensors_of

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

SLIDING_WINDOW = 128  # under the 384 tokens compared: the window shows


def build_gemma3(out: Path, tokenizer_dir: Path, seed: int = 0, **config) -> Path:
    """6 layers (layer 5 global), hidden 256, 4 heads of 64 (2 KV heads), MLP 512: every row
    a multiple of 256, so k-quants apply without fallback. The vocabulary is the tokenizer's
    600 tokens (llama.cpp's converter would cut a larger embedding to the tokenizer's count).
    `config` overrides Gemma3TextConfig arguments."""
    import torch
    from tokenizers import Tokenizer
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    args: dict = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        query_pre_attn_scalar=64,  # = head_dim, the scale llama.cpp's graph uses
        sliding_window=SLIDING_WINDOW,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.08,  # random weights whose logits are not flat
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    args.update(config)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**args)).eval()
    with torch.no_grad():  # Gemma's norms scale by 1 + weight: away from 0, so a norm written wrongly shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.2 * torch.randn_like(p))
    card = "---\nlicense: apache-2.0\n---\nA tiny Gemma-3-shaped model built by edgekit's tests.\n"
    return save_checkpoint(model, tokenizer_dir, out, card)


def _checkpoint(path: Path):
    from edgekit.models.source import _local

    return _local(path, origin="local")


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory, tiny_tokenizer):
    pytest.importorskip("transformers")
    return build_gemma3(tmp_path_factory.mktemp("tiny-g3"), tiny_tokenizer)


@pytest.fixture(scope="module")
def gemma3_f32(tiny_gemma3, tmp_path_factory):
    from edgekit.quantize.gguf import Recipe, convert

    ck = _checkpoint(tiny_gemma3)
    out = tmp_path_factory.mktemp("g3-f32") / "tiny-g3-F32.gguf"
    convert(ck, out, Recipe(mix="F32"))
    return ck, out


def test_gemma3_f32_tensors_and_metadata(gemma3_f32):
    import numpy as np

    from edgekit.models.weights import SafetensorsCheckpoint

    ck, path = gemma3_f32
    md = metadata(path)
    assert md["general.architecture"] == "gemma3"
    assert md["gemma3.attention.sliding_window"] == SLIDING_WINDOW
    assert md["gemma3.rope.freq_base"] == 1e6 and md["gemma3.rope.freq_base_swa"] == 1e4
    assert md["gemma3.attention.key_length"] == 64 and md["gemma3.attention.head_count_kv"] == 2
    assert md["gemma3.context_length"] == 2048 and md["gemma3.block_count"] == 6
    assert "gemma3.final_logit_softcapping" not in md
    # every norm is Gemma's weight + 1, the rest as stored
    t = {n: v for n, v in tensors_of(path).items()}
    assert "output.weight" not in t
    w = SafetensorsCheckpoint(ck.safetensors_files())
    try:
        for hf, gg in (
            ("model.layers.5.post_feedforward_layernorm.weight", "blk.5.post_ffw_norm.weight"),
            ("model.layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"),
        ):
            shift = 1.0 if gg.endswith("norm.weight") else 0.0
            ours = np.frombuffer(t[gg][1], np.float32)
            assert np.array_equal(ours, w.load_f32(hf).ravel() + np.float32(shift))
    finally:
        w.close()


def test_gemma3_planner_inventory_is_the_file(gemma3_f32):
    ck, path = gemma3_f32
    arch = ck.entry.arch
    planned = {t.name: tuple(t.shape) for t in arch.tensors()}
    assert planned == tensor_table(path)
    assert len(planned) == 1 + 6 * 13 + 1


def test_gemma3_f32_logits_match_transformers(gemma3_f32, record_property):
    ck, path = gemma3_f32
    top1, max_abs, std = logits_agree(ck, path)
    record_property("max_abs_logit_diff", max_abs)
    print(f"gemma3: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e} (logit std {std:.2f})")
    assert std > 0.5  # the logits are not flat
    assert top1 >= 0.99
    assert max_abs < 0.05 * std


@pytest.fixture(scope="module")
def gemma3_imatrix(gemma3_f32):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    ck, _ = gemma3_f32
    return imatrix.collect(ck, default_calibration_text(), ctx=256, max_chunks=4).importances()


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_gemma3_one_pass_is_byte_identical_to_llama_quantize(
    mix, with_imatrix, gemma3_f32, request, tmp_path
):
    ck, f32 = gemma3_f32
    imp = request.getfixturevalue("gemma3_imatrix") if with_imatrix else None
    if imp is not None:
        assert {"blk.5.attn_q.weight", "blk.0.ffn_down.weight"} <= set(imp)
    a = assert_same_as_llama_quantize(ck, f32, mix, imp, tmp_path)
    if mix == "Q4_K_M":  # the tied embedding is the output: Q6_K
        assert a["token_embd.weight"][0] == "Q6_K"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"query_pre_attn_scalar": 256}, "query_pre_attn_scalar 256 is not 64"),
        ({"layer_types": ["sliding_attention", "full_attention"] * 3}, "every 6th layer global"),
        ({"vocab_size": 640}, "llama.cpp keeps 603 token_embd rows"),
    ],
    ids=["attention-scale", "layer-pattern", "oov-rows"],
)
def test_gemma3_configs_llama_cpp_reads_otherwise_are_refused(change, message, tiny_gemma3, tmp_path):
    import shutil

    from edgekit.errors import EdgekitError
    from edgekit.quantize.gguf import Recipe, convert

    d = tmp_path / "tiny-g3-changed"
    shutil.copytree(tiny_gemma3, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgekitError, match=message):
        convert(_checkpoint(d), tmp_path / "x.gguf", Recipe(mix="F32"))
    assert not list(tmp_path.glob("*.gguf*"))
