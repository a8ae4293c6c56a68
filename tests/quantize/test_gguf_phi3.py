"""Phi-3 through the one-pass converter: a tiny random-weight Phi3ForCausalLM (fused qkv and
gate/up projections, as Phi-3.5-mini and Phi-4 store them) against transformers' logits, against
llama.cpp's own quantizer (llama_model_quantize of edgekit's F32 file), and against the planner's
tensor inventory; and a long-RoPE config, whose factor vectors llama.cpp reads."""

import json
from pathlib import Path

import pytest

from tests.quantize.gguf_util import assert_same_as_llama_quantize, tensors_of

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

ROPE_DIMS = 64  # hidden 256 / 4 heads, partial_rotary_factor 1


def build_phi3(out: Path, tokenizer_dir: Path, rope_scaling: dict | None = None, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer
    from transformers import Phi3Config, Phi3ForCausalLM

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    extra: dict = {}
    if rope_scaling is not None:
        extra["rope_scaling"] = rope_scaling
    cfg = Phi3Config(
        vocab_size=640,  # larger than the tokenizer: llama.cpp sees padding tokens too
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192 if rope_scaling else 2048,
        original_max_position_embeddings=2048,
        rope_theta=10000.0,
        sliding_window=None,
        tie_word_embeddings=False,
        initializer_range=0.08,  # random weights whose logits are not flat
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        **extra,
    )
    model = Phi3ForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1, so a norm written wrongly shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    card = "---\nlicense: mit\n---\nA tiny Phi-3 built by edgekit's tests.\n"
    return save_checkpoint(model, tokenizer_dir, out, card)


@pytest.fixture(scope="module")
def tiny_phi3(tmp_path_factory, tiny_tokenizer):
    pytest.importorskip("transformers")
    # not named "phi3": llama.cpp sets token attributes of "</s>", "<unk>", "<s>" for a model
    # whose general.name says phi-3 / phi3, and stops when the vocabulary lacks them (as this
    # byte-level BPE one does; Phi-3's SentencePiece vocabulary has them)
    return build_phi3(tmp_path_factory.mktemp("tiny-p3"), tiny_tokenizer)


def _checkpoint(path: Path):
    from edgekit.models.source import _local

    return _local(path, origin="local")


@pytest.fixture(scope="module")
def phi3_f32(tiny_phi3, tmp_path_factory):
    from edgekit.quantize.gguf import Recipe, convert

    ck = _checkpoint(tiny_phi3)
    out = tmp_path_factory.mktemp("phi3-f32") / "phi3-F32.gguf"
    convert(ck, out, Recipe(mix="F32"))
    return ck, out


def _metadata(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}


def _logits_agree(ck, path: Path, n_ctx: int = 512, n_tokens: int = 384) -> tuple[float, float, float]:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    session = llamacpp.load(path, n_ctx=n_ctx)
    ids = session.tokenize(default_evaluation_text())[:n_tokens]
    ours = session.logits(ids)
    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()[:, : ours.shape[1]]
    top1 = float((ours.argmax(1) == ref.argmax(1)).mean())
    return top1, float(np.abs(ours - ref).max()), float(ref.std())


def test_phi3_f32_tensors_and_metadata(phi3_f32):
    ck, path = phi3_f32
    t = tensors_of(path)
    assert "blk.0.attn_qkv.weight" in t and "blk.0.attn_q.weight" not in t
    assert "blk.1.ffn_up.weight" in t and "blk.1.ffn_gate.weight" not in t
    assert not any(n.startswith("rope_factors") for n in t)
    md = _metadata(path)
    assert md["general.architecture"] == "phi3"
    assert md["phi3.context_length"] == 2048
    assert md["phi3.rope.dimension_count"] == ROPE_DIMS
    assert md["phi3.rope.scaling.original_context_length"] == 2048
    assert md["phi3.attention.sliding_window"] == 0
    assert md["phi3.attention.head_count"] == 4 and md["phi3.attention.head_count_kv"] == 2
    assert md["phi3.feed_forward_length"] == 512


def test_phi3_planner_inventory_is_the_file(phi3_f32):
    from gguf import GGUFReader

    from edgekit.models.arch import arch_family

    ck, path = phi3_f32
    arch = ck.entry.arch
    planned = {t.name: tuple(t.shape) for t in arch_family(arch).tensors(arch)}
    written = {t.name: tuple(int(d) for d in t.shape) for t in GGUFReader(path).tensors}
    assert planned == written


def test_phi3_f32_logits_match_transformers(phi3_f32, record_property):
    ck, path = phi3_f32
    top1, max_abs, std = _logits_agree(ck, path)
    record_property("max_abs_logit_diff", max_abs)
    print(f"phi3: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e} (logit std {std:.2f})")
    assert top1 >= 0.99
    assert max_abs < 0.05 * std


@pytest.fixture(scope="module")
def phi3_imatrix(phi3_f32):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    ck, _ = phi3_f32
    return imatrix.collect(ck, default_calibration_text(), ctx=256, max_chunks=4).importances()


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_phi3_one_pass_is_byte_identical_to_llama_quantize(mix, with_imatrix, phi3_f32, request, tmp_path):
    ck, f32 = phi3_f32
    imp = request.getfixturevalue("phi3_imatrix") if with_imatrix else None
    a = assert_same_as_llama_quantize(ck, f32, mix, imp, tmp_path)
    if mix == "Q4_K_M":  # the fused qkv counts as attn_v in llama.cpp's mix: more bits in the last layer
        assert (a["blk.0.attn_qkv.weight"][0], a["blk.1.attn_qkv.weight"][0]) == ("Q4_K", "Q6_K")


def _long_rope(scale: float = 1.0) -> dict:
    half = ROPE_DIMS // 2
    return {
        "type": "longrope",
        "long_factor": [1.0 + 0.25 * i * scale for i in range(half)],
        "short_factor": [1.0 + 0.01 * i for i in range(half)],
    }


@pytest.mark.slow
def test_phi3_long_rope_writes_factor_tensors_and_agrees(tiny_tokenizer, tmp_path):
    import numpy as np
    from gguf import GGUFReader

    from edgekit.quantize.gguf import Recipe, convert

    ck = _checkpoint(build_phi3(tmp_path / "tiny-p3-long", tiny_tokenizer, rope_scaling=_long_rope()))
    cfg = json.loads((ck.path / "config.json").read_text())
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    out = tmp_path / "long-F32.gguf"
    convert(ck, out, Recipe(mix="F32"))
    r = GGUFReader(out)
    by_name = {t.name: t for t in r.tensors}
    assert np.allclose(by_name["rope_factors_long.weight"].data, rp["long_factor"])
    assert np.allclose(by_name["rope_factors_short.weight"].data, rp["short_factor"])
    md = _metadata(out)
    assert md["phi3.context_length"] == 8192
    assert md["phi3.rope.scaling.original_context_length"] == 2048
    assert md["phi3.rope.scaling.attn_factor"] == pytest.approx((1 + np.log(4) / np.log(2048)) ** 0.5)
    # within the original context (2048) both use the short factors, beyond it the long ones
    # (llama.cpp by its context size, transformers by the sequence length); the same
    # attention factor throughout
    for n_ctx, n_tokens in ((512, 384), (4096, 2304)):
        top1, max_abs, std = _logits_agree(ck, out, n_ctx=n_ctx, n_tokens=n_tokens)
        print(f"phi3 longrope, {n_tokens} tokens: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e}")
        assert top1 >= 0.99 and max_abs < 0.05 * std


def test_phi3_long_rope_with_wrong_factor_count_is_refused(tiny_tokenizer, tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.quantize.gguf import Recipe, convert

    path = build_phi3(tmp_path / "tiny-p3-bad", tiny_tokenizer, rope_scaling=_long_rope())
    cfg = json.loads((path / "config.json").read_text())  # transformers refuses to write it
    (cfg.get("rope_parameters") or cfg["rope_scaling"])["short_factor"] = [1.0] * 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgekitError, match="rope dims / 2"):
        convert(_checkpoint(path), tmp_path / "x.gguf", Recipe(mix="F32"))
    assert not (tmp_path / "x.gguf").exists()
