"""DeepSeek-V3 and -V2 through the one-pass converter (issue 14): tiny random-weight
DeepseekV3ForCausalLM / DeepseekV2ForCausalLM checkpoints (multi-head latent attention, a dense
first layer, routed experts with a shared expert; V3 routes by sigmoid with a learned bias and
expert groups, and carries a multi-token-prediction layer past num_hidden_layers as the real
checkpoints do) against transformers' logits, against llama.cpp's own quantizer
(llama_model_quantize of edgekit's F32 file), and against the planner's tensor inventory; and
the configs llama.cpp's DEEPSEEK2 graph would read otherwise, refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.quantize.gguf_logits import logits_agree, metadata, tensor_table
from tests.quantize.gguf_util import assert_same_as_llama_quantize, tensors_of

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

# the routers' spread and the V3 routing bias's: the bias changes which experts are picked
ROUTER_SCALE, BIAS_SCALE = 2.0, 0.3
N_LAYERS = 3  # not 26 or 27: llama.cpp takes those for V2-Lite, which has no q_lora_rank


def build_deepseek(out: Path, tokenizer_dir: Path, version: int = 3, seed: int = 0, **config) -> Path:
    """3 layers (layer 0 dense), hidden 256, 4 heads; MLA with q_lora_rank 256, kv_lora_rank
    256, 128 + 64 query/key dimensions per head (the RoPE part 64) and 128 value dimensions:
    every row a multiple of 256 but attn_k_b's (128, as in the real models), so k-quants fall
    back only there. 12 routed experts of width 256 (not 8: llama.cpp's mixes treat 8-expert
    models apart), 4 per token, one shared expert. V3: sigmoid scores with a random
    e_score_correction_bias, 4 groups of which 2 are used, top-k weights normalised and scaled
    by 2.5, and one multi-token-prediction layer in the checkpoint (layer 3, which neither
    transformers nor llama.cpp runs). V2: softmax scores, greedy top-k, scaled by 1.0.
    `config` overrides the config class's arguments."""
    import torch
    from tokenizers import Tokenizer

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    args: dict = dict(
        vocab_size=640,  # larger than the tokenizer: llama.cpp sees padding tokens too
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=256,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=256,
        kv_lora_rank=256,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=12,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=1,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        initializer_range=0.06,  # random weights whose logits are not flat
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    if version == 3:
        from transformers import DeepseekV3Config as Config
        from transformers import DeepseekV3ForCausalLM as Model

        # the real V3 config states its scoring function (transformers' V3 always uses sigmoid)
        args.update(
            n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5, scoring_func="sigmoid"
        )
    else:
        from transformers import DeepseekV2Config as Config
        from transformers import DeepseekV2ForCausalLM as Model

        # as DeepSeek-V2-Lite's config states them
        args.update(
            n_group=1,
            topk_group=1,
            topk_method="greedy",
            norm_topk_prob=False,
            routed_scaling_factor=1.0,
            scoring_func="softmax",
        )
    args.update(config)
    model = Model(Config(**args)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # norms away from 1, so a norm written wrongly shows
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(ROUTER_SCALE * p)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(BIAS_SCALE * torch.randn_like(b))
    card = "---\nlicense: mit\n---\nA tiny DeepSeek-shaped model built by edgekit's tests.\n"
    path = save_checkpoint(model, tokenizer_dir, out, card)
    if version == 3:
        _add_mtp_layer(path, model.config)
    return path


def _add_mtp_layer(path: Path, cfg) -> None:
    """A multi-token-prediction layer as DeepSeek-V3's checkpoint stores it (layer
    num_hidden_layers: a decoder layer plus enorm / hnorm / eh_proj / shared_head), in a
    second safetensors file named in the index; num_nextn_predict_layers says there is one."""
    import torch
    from safetensors.torch import load_file, save_file

    n = cfg.num_hidden_layers
    files = sorted(path.glob("*.safetensors"))
    last = f"model.layers.{n - 1}."
    mtp: dict[str, torch.Tensor] = {}
    for f in files:
        for k, v in load_file(f).items():
            if k.startswith(last):
                mtp[f"model.layers.{n}." + k[len(last) :]] = v.clone()
    h = cfg.hidden_size
    mtp |= {
        f"model.layers.{n}.enorm.weight": torch.ones(h),
        f"model.layers.{n}.hnorm.weight": torch.ones(h),
        f"model.layers.{n}.eh_proj.weight": 0.02 * torch.randn(h, 2 * h),
        f"model.layers.{n}.shared_head.norm.weight": torch.ones(h),
        f"model.layers.{n}.shared_head.head.weight": 0.02 * torch.randn(cfg.vocab_size, h),
    }
    extra = "model-mtp.safetensors"
    save_file({k: v.contiguous() for k, v in mtp.items()}, str(path / extra), metadata={"format": "pt"})
    index = path / "model.safetensors.index.json"
    if index.is_file():
        idx = json.loads(index.read_text())
    else:
        (only,) = files
        idx = {"metadata": {}, "weight_map": dict.fromkeys(load_file(only), only.name)}
    idx["weight_map"] |= dict.fromkeys(mtp, extra)
    index.write_text(json.dumps(idx, indent=2))
    c = json.loads((path / "config.json").read_text())
    c["num_nextn_predict_layers"] = 1
    (path / "config.json").write_text(json.dumps(c, indent=2))


def _checkpoint(path: Path):
    from edgekit.models.source import _local

    return _local(path, origin="local")


@pytest.fixture(scope="module", params=[3, 2], ids=["v3", "v2"])
def version(request) -> int:
    return request.param


@pytest.fixture(scope="module")
def tiny_deepseek(version, tmp_path_factory, tiny_tokenizer):
    pytest.importorskip("transformers")
    return build_deepseek(tmp_path_factory.mktemp(f"tiny-ds{version}"), tiny_tokenizer, version=version)


@pytest.fixture(scope="module")
def deepseek_f32(tiny_deepseek, version, tmp_path_factory):
    from edgekit.quantize.gguf import Recipe, convert

    ck = _checkpoint(tiny_deepseek)
    out = tmp_path_factory.mktemp(f"ds{version}-f32") / f"tiny-ds{version}-F32.gguf"
    convert(ck, out, Recipe(mix="F32"))
    return ck, out


def test_deepseek_f32_tensors_and_metadata(deepseek_f32, version):
    import numpy as np

    from edgekit.models.weights import SafetensorsCheckpoint

    ck, path = deepseek_f32
    md = metadata(path)
    assert md["general.architecture"] == "deepseek2"
    k = {key[len("deepseek2.") :]: v for key, v in md.items() if key.startswith("deepseek2.")}
    # MLA as llama.cpp's graph reads it: one KV "head" of the latent and the RoPE key
    assert (k["attention.head_count"], k["attention.head_count_kv"]) == (4, 1)
    assert (k["attention.key_length"], k["attention.value_length"]) == (256 + 64, 256)
    assert (k["attention.key_length_mla"], k["attention.value_length_mla"]) == (128 + 64, 128)
    assert (k["attention.q_lora_rank"], k["attention.kv_lora_rank"], k["rope.dimension_count"]) == (
        256,
        256,
        64,
    )
    assert (k["leading_dense_block_count"], k["feed_forward_length"], k["expert_feed_forward_length"]) == (
        1,
        512,
        256,
    )
    assert (k["expert_count"], k["expert_used_count"], k["expert_shared_count"]) == (12, 4, 1)
    assert k["block_count"] == N_LAYERS  # the MTP layer is not a block
    if version == 3:
        assert k["expert_gating_func"] == 2 and k["expert_weights_norm"] is True
        assert (k["expert_weights_scale"], k["expert_group_count"], k["expert_group_used_count"]) == (
            2.5,
            4,
            2,
        )
    else:
        assert k["expert_gating_func"] == 1 and "expert_weights_norm" not in k
        assert k["expert_weights_scale"] == 1.0 and k["expert_group_count"] == 1
    assert "rope.scaling.type" not in k and "rope.scaling.yarn_log_multiplier" not in k
    t = tensors_of(path)
    assert not [n for n in t if n.startswith(f"blk.{N_LAYERS}.")]  # no MTP tensors
    assert ("blk.1.exp_probs_b.bias" in t) == (version == 3)
    w = SafetensorsCheckpoint(ck.safetensors_files())
    try:
        # kv_b_proj cut per head into the key rows (transposed) and the value rows
        kv_b = w.load_f32("model.layers.2.self_attn.kv_b_proj.weight").reshape(4, 128 + 128, 256)
        k_b = np.frombuffer(t["blk.2.attn_k_b.weight"][1], np.float32).reshape(4, 256, 128)
        v_b = np.frombuffer(t["blk.2.attn_v_b.weight"][1], np.float32).reshape(4, 128, 256)
        assert np.array_equal(k_b, kv_b[:, :128, :].transpose(0, 2, 1))
        assert np.array_equal(v_b, kv_b[:, 128:, :])
        # experts stacked expert by expert; the rest as stored
        down = np.frombuffer(t["blk.1.ffn_down_exps.weight"][1], np.float32).reshape(12, 256, 256)
        assert np.array_equal(down[7], w.load_f32("model.layers.1.mlp.experts.7.down_proj.weight"))
        for hf, gg in (
            ("model.layers.1.mlp.shared_experts.up_proj.weight", "blk.1.ffn_up_shexp.weight"),
            ("model.layers.0.self_attn.q_a_layernorm.weight", "blk.0.attn_q_a_norm.weight"),
            ("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "blk.0.attn_kv_a_mqa.weight"),
            *(
                [("model.layers.2.mlp.gate.e_score_correction_bias", "blk.2.exp_probs_b.bias")]
                if version == 3
                else []
            ),
        ):
            assert np.array_equal(np.frombuffer(t[gg][1], np.float32), w.load_f32(hf).ravel()), gg
    finally:
        w.close()


def test_deepseek_planner_inventory_is_the_file(deepseek_f32, version):
    from edgekit.models.catalogue import from_gguf

    ck, path = deepseek_f32
    # the file reads back as the checkpoint's architecture (V3 by its routing bias)
    assert from_gguf(path).arch == ck.entry.arch
    assert ck.entry.arch.family == f"deepseek_v{version}" and ck.entry.arch.head_dim == 128 + 64
    planned = {t.name: tuple(t.shape) for t in ck.entry.arch.tensors()}
    assert planned == tensor_table(path)
    # attention 9 (norm, q_a, its norm, q_b, kv_a_mqa, its norm, k_b, v_b, output), ffn_norm; then
    # a dense MLP (3) or router (+ its bias in V3), 3 stacked experts, 3 shared-expert weights
    dense, moe = 9 + 1 + 3, 9 + 1 + 1 + (1 if version == 3 else 0) + 3 + 3
    assert len(planned) == 1 + dense + 2 * moe + 2
    assert planned["blk.0.attn_k_b.weight"] == (128, 256, 4)  # [n_head, kv_lora_rank, qk_nope] in numpy


def _logits_with_f32_cache(path: Path, ids: list[int]):
    """llama.cpp's logits of `ids` with an F32 KV cache (the runtime offers F16 and smaller)."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        logits_all=True,
        type_k=0,  # GGML_TYPE_F32
        type_v=0,
        n_threads=2,
        verbose=False,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _agreement(ck, path: Path) -> tuple[float, float, float, float, float]:
    """(top-1 agreement and max |logit diff| as the runtime runs the file, logit std, top-1
    agreement and max |logit diff| with an F32 KV cache) against transformers over 384 tokens
    of the evaluation text."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.text import default_evaluation_text

    top1, max_abs, std = logits_agree(ck, path)
    ids = _tokens(path, default_evaluation_text())[:384]
    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    ours = _logits_with_f32_cache(path, ids)
    ref = ref[:, : ours.shape[1]]
    exact_top1 = float((ours.argmax(1) == ref.argmax(1)).mean())
    return top1, max_abs, std, exact_top1, float(np.abs(ours - ref).max())


def test_deepseek_f32_logits_match_transformers(deepseek_f32, version, record_property):
    """llama.cpp as the runtime runs it (F16 KV cache): top-1 as transformers'. The cache's F16
    rounding (about 1e-3 in the logits) can flip an expert where a token's 4th and 5th scores lie
    within it, which moves that position's logits; with an F32 cache the logits are
    transformers' to float rounding, which shows the conversion itself is exact."""
    ck, path = deepseek_f32
    top1, max_abs, std, exact_top1, exact = _agreement(ck, path)
    record_property("max_abs_logit_diff", max_abs)
    record_property("max_abs_logit_diff_f32_cache", exact)
    print(
        f"deepseek v{version}: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e} "
        f"(F32 KV cache: {exact:.2e}; logit std {std:.2f})"
    )
    assert std > 0.5  # the logits are not flat
    # each flipped expert may move one position's top token (measured: 0 to 3 of 384)
    assert top1 >= 0.98
    assert exact_top1 >= 0.99 and exact < 1e-3


YARN = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 40.0,
    "original_max_position_embeddings": 128,  # under the 384 tokens compared: the scaling shows
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
VARIANTS = {
    # DeepSeek-V3's own RoPE scaling (factor 40, mscale and mscale_all_dim 1)
    "v3-yarn": dict(version=3, rope_parameters=YARN),
    # V2-Lite: no q_lora_rank (a plain attn_q), which llama.cpp reads only at 26 or 27 layers
    "v2-lite": dict(
        version=2, num_hidden_layers=27, q_lora_rank=None, n_routed_experts=4, num_experts_per_tok=2
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deepseek_variants_logits_match_transformers(variant, tmp_path, tiny_tokenizer):
    from edgekit.quantize.gguf import Recipe, convert

    ck = _checkpoint(build_deepseek(tmp_path / variant, tiny_tokenizer, **VARIANTS[variant]))
    path = tmp_path / f"{variant}-F32.gguf"
    convert(ck, path, Recipe(mix="F32"))
    k = {key[len("deepseek2.") :]: v for key, v in metadata(path).items() if key.startswith("deepseek2.")}
    t = tensor_table(path)
    if variant == "v3-yarn":
        assert (k["rope.scaling.type"], k["rope.scaling.factor"]) == ("yarn", 40.0)
        assert k["rope.scaling.original_context_length"] == 128
        assert abs(k["rope.scaling.yarn_log_multiplier"] - 0.1) < 1e-7  # 0.1 * mscale_all_dim
    else:
        assert "attention.q_lora_rank" not in k and k["block_count"] == 27
        assert "blk.0.attn_q.weight" in t and "blk.0.attn_q_a.weight" not in t
    assert {x.name: tuple(x.shape) for x in ck.entry.arch.tensors()} == t
    top1, max_abs, std, exact_top1, exact = _agreement(ck, path)
    print(
        f"deepseek {variant}: top-1 agreement {top1:.4f}, max |logit diff| {max_abs:.2e} "
        f"(F32 KV cache: {exact:.2e}; logit std {std:.2f})"
    )
    assert std > 0.5 and top1 >= 0.98 and exact_top1 >= 0.99 and exact < 1e-3


def _tokens(path: Path, text: str) -> list[int]:
    from edgekit.runtimes import llamacpp

    session = llamacpp.load(path, n_ctx=512)
    try:
        return session.tokenize(text)
    finally:
        session.close()


@pytest.fixture(scope="module")
def deepseek_imatrix(deepseek_f32):
    from edgekit.quantize import imatrix
    from edgekit.text import default_calibration_text

    ck, _ = deepseek_f32
    return imatrix.collect(ck, default_calibration_text(), ctx=256, max_chunks=4).importances()


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_deepseek_one_pass_is_byte_identical_to_llama_quantize(
    mix, with_imatrix, deepseek_f32, request, tmp_path
):
    ck, f32 = deepseek_f32
    imp = request.getfixturevalue("deepseek_imatrix") if with_imatrix else None
    if imp is not None:
        assert {"blk.0.attn_q_a.weight", "blk.1.ffn_down_exps.weight", "blk.2.ffn_up_shexp.weight"} <= set(
            imp
        )
    a = assert_same_as_llama_quantize(ck, f32, mix, imp, tmp_path)
    if mix == "Q4_K_M":  # attn_k_b's rows of 128 are no k-quant's: llama.cpp falls back, as here
        assert a["blk.0.attn_k_b.weight"][0] == "Q5_0" and a["blk.0.attn_v_b.weight"][0] == "Q4_K"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attention_bias": True}, "attention_bias is set"),
        ({"rope_interleave": False}, "rope_interleave is false"),
        ({"q_lora_rank": None}, "no q_lora_rank"),
    ],
    ids=["attention-bias", "rope-not-interleaved", "no-q-lora"],
)
def test_deepseek_configs_llama_cpp_reads_otherwise_are_refused(change, message, tmp_path, tiny_tokenizer):
    import shutil

    from edgekit.errors import EdgekitError
    from edgekit.quantize.gguf import Recipe, convert

    d = tmp_path / "tiny-ds-changed"
    src = build_deepseek(tmp_path / "tiny-ds", tiny_tokenizer)
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgekitError, match=message):
        convert(_checkpoint(d), tmp_path / "x.gguf", Recipe(mix="F32"))
    assert not list(tmp_path.glob("*.gguf*"))


def test_deepseek_v3_without_scoring_func_gates_by_sigmoid(tmp_path, tiny_tokenizer):
    """transformers' V3 always scores by sigmoid; a config that names no scoring function (which
    llama.cpp's converter would leave to llama.cpp's softmax default) is written as sigmoid."""
    from edgekit.quantize.gguf import Recipe, convert

    d = build_deepseek(tmp_path / "tiny-ds", tiny_tokenizer)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["scoring_func"]
    (d / "config.json").write_text(json.dumps(cfg))
    ck = _checkpoint(d)
    path = tmp_path / "no-scoring-F32.gguf"
    convert(ck, path, Recipe(mix="F32"))
    assert metadata(path)["deepseek2.expert_gating_func"] == 2
    top1, _, _, exact_top1, exact = _agreement(ck, path)
    assert top1 >= 0.98 and exact_top1 >= 0.99 and exact < 1e-3
