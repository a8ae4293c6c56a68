"""GPTQ / AWQ / FP8 through llm-compressor for the families beyond Qwen/Llama (issue 14):
Gemma 3, Phi-3, Mixtral and DeepSeek-V3, each a tiny random checkpoint quantized with every
method, reloaded with transformers (compressed-tensors) and checked: the quantized modules
are what the scheme says, lm_head, embeddings and routers stay BF16, every expert of every
MoE layer is quantized (and calibrated: llm-compressor sends all calibration tokens through
every expert), Mixtral's experts are saved under its own per-expert names (the layout vLLM
loads), and the KLD against the BF16 model on a short text is finite and under a stated
bound. The families' refusals come in one line, before anything is loaded."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.models.arch import ArchFamily, arch_family, unregister

pytestmark = [pytest.mark.torch]

FORMATS = {"gptq": "gptq:w4g128", "awq": "awq:w4g128", "fp8": "fp8:dynamic"}
# one short calibration window (a few hundred tokens): enough for these tiny models, and
# AWQ's grid search over every expert stays quick
CALIBRATION_CHARS = 1200
# KLD (nats, mean over positions) against the unquantized model on 3000 characters: bounds
# about 3x what these random, untrained models measured (their 4-bit rounding loses most;
# a broken checkpoint, e.g. experts left random, measures well above 1)
KLD_BOUND = {
    ("gemma3", "gptq"): 0.15,  # measured 0.044
    ("gemma3", "awq"): 0.2,  # 0.067
    ("gemma3", "fp8"): 0.03,  # 0.0073
    ("phi3", "gptq"): 0.4,  # 0.142
    ("phi3", "awq"): 0.5,  # 0.203
    ("phi3", "fp8"): 0.08,  # 0.025
    ("mixtral", "gptq"): 0.15,  # 0.053
    ("mixtral", "awq"): 0.2,  # 0.063
    ("mixtral", "fp8"): 0.05,  # 0.014
    ("deepseek_v3", "gptq"): 0.4,  # 0.144
    ("deepseek_v3", "awq"): 0.7,  # 0.277
    ("deepseek_v3", "fp8"): 0.15,  # 0.046
}
# (MoE layers, experts per layer) of the tiny MoE checkpoints
EXPERTS = {"mixtral": (2, 4), "deepseek_v3": (1, 4)}


def build_deepseek_v3(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """2 layers (layer 0 dense: first_k_dense_replace 1), hidden 256, MLA with q_lora 128,
    kv_lora 128, 2 heads of 128 + 64 RoPE dims (value heads 128); 4 routed experts of width
    128 (top-2, one group) and a shared expert. Every Linear's input width, and every piece
    the planner cuts kv_b_proj into, is a multiple of 128."""
    import torch
    from tokenizers import Tokenizer
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cfg = DeepseekV3Config(
        vocab_size=640,
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=2,
        first_k_dense_replace=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        q_lora_rank=128,
        kv_lora_rank=128,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.08,  # random weights whose logits are not flat
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    model = DeepseekV3ForCausalLM(cfg).eval()
    with torch.no_grad():  # routers and their bias away from 0, so routing is not uniform
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                p.copy_(0.1 * torch.randn_like(p))
    return save_checkpoint(model, tokenizer_dir, out)


def build_mixtral(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """test_gguf_mixtral's tiny Mixtral narrowed to hidden 128 (2 heads of 64, one KV head),
    4 experts of width 128, top-2, 2 layers: AWQ's grid search runs per expert, so width is
    time. Untrained: random weights drawn wide enough that the logits are not flat."""
    import torch
    from tokenizers import Tokenizer
    from transformers import MixtralConfig, MixtralForCausalLM

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cfg = MixtralConfig(
        vocab_size=640,
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=2048,
        rope_theta=1e6,
        tie_word_embeddings=False,
        initializer_range=0.08,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        bos_token_id=None,
    )
    return save_checkpoint(MixtralForCausalLM(cfg).eval(), tokenizer_dir, out)


def _build(family: str, out: Path, tokenizer_dir: Path) -> Path:
    if family == "gemma3":
        from tests.quantize.test_gguf_gemma3 import build_gemma3

        return build_gemma3(out, tokenizer_dir)
    if family == "phi3":
        from tests.quantize.test_gguf_phi3 import build_phi3

        return build_phi3(out, tokenizer_dir)
    if family == "mixtral":
        return build_mixtral(out, tokenizer_dir)
    return build_deepseek_v3(out, tokenizer_dir)


def _ck(path: Path):
    from edgekit.models.source import _local

    return _local(Path(path), origin="local")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer):
    """family -> (checkpoint directory, reference store), built on first use."""
    pytest.importorskip("llmcompressor", reason="needs the quant extra (llm-compressor)")
    from edgekit.bench.reference import reference_store
    from edgekit.text import default_evaluation_text

    made: dict = {}

    def get(family: str):
        if family not in made:
            path = _build(
                family, tmp_path_factory.mktemp(f"tiny-{family.replace('phi3', 'p3')}"), tiny_tokenizer
            )
            made[family] = path, reference_store(_ck(path), default_evaluation_text()[:3000])
        return made[family]

    return get


def _tensors(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_slice(k).get_dtype()
    return out


def _linear_weights(checkpoint: Path) -> set[str]:
    """The unquantized checkpoint's Linear layers in the blocks: its 2-D weights, less the
    routers (`.gate`) and norms, under the checkpoint's own names."""
    from safetensors import safe_open

    out = set()
    for f in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                if ".layers." in k and k.endswith(".weight") and len(fh.get_slice(k).get_shape()) == 2:
                    if not k.endswith((".gate.weight", "norm.weight")):
                        out.add(k.removesuffix(".weight"))
    return out


def _check_layout(family: str, method: str, art, checkpoint: Path) -> None:
    keys = _tensors(art.path)
    qcfg = json.loads((art.path / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors"
    w = next(iter(qcfg["config_groups"].values()))["weights"]
    scales = {k.removesuffix(".weight_scale") for k in keys if k.endswith(".weight_scale")}
    if method == "fp8":
        assert (w["type"], w["num_bits"], w["strategy"]) == ("float", 8, "channel"), w
        assert {keys[f"{m}.weight"] for m in scales} == {"F8_E4M3"}
    else:
        assert (w["type"], w["num_bits"], w["strategy"], w["group_size"]) == ("int", 4, "group", 128), w
        assert all(keys[f"{m}.weight_packed"] == "I32" for m in scales)
    # every Linear of every block (every expert too) is quantized, under the checkpoint's names
    assert scales == _linear_weights(checkpoint), sorted(scales ^ _linear_weights(checkpoint))
    # lm_head, the embedding, the norms and the routers stay BF16
    wide = [
        k
        for k in keys
        if k.endswith(("lm_head.weight", "embed_tokens.weight", "norm.weight", ".gate.weight"))
    ]
    tied = family == "gemma3"  # Gemma ties lm_head to the embedding: no tensor of its own
    assert ("lm_head.weight" in wide) != tied and "model.embed_tokens.weight" in wide
    for k in wide:
        assert keys[k] == "BF16" and k.removesuffix(".weight") not in scales, (k, keys[k])
    if family in EXPERTS:
        layers, n = EXPERTS[family]
        routers = [k for k in wide if k.endswith(".gate.weight")]
        assert len(routers) == layers, routers
        experts = {m for m in scales if ".experts." in m}
        assert len(experts) == layers * n * 3, sorted(experts)  # every expert, every projection
        assert art.manifest.recipe["moe_calibrate_all_experts"] is True
        assert any(r.startswith(("model.layers.", "re:")) for r in qcfg["ignore"])
    if method == "awq":  # the family's smoothing pairs, recorded
        assert art.manifest.recipe["awq_mappings"] == arch_family(family).ct_awq_mappings
    if family == "mixtral":  # saved as Mixtral's checkpoints name them (vLLM's per-expert layout)
        assert "model.layers.1.block_sparse_moe.experts.3.w2.weight_scale" in keys
        assert not any(".mlp." in k or "gate_proj" in k for k in keys)
        assert "model.layers.0.block_sparse_moe.gate" in qcfg["ignore"]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FORMATS))
@pytest.mark.parametrize("family", ["gemma3", "phi3", "mixtral", "deepseek_v3"])
def test_family_quantizes_reloads_and_stays_close(family, method, tiny, tmp_path, record_property):
    from edgekit.bench.reference import score_artifact
    from edgekit.formats import BuildOptions, build

    path, store = tiny(family)
    fmt = get_format(FORMATS[method])
    calib = None
    if fmt.impl.takes_calibration(fmt):
        from edgekit.text import default_calibration_text

        calib = tmp_path / "calibration.txt"
        calib.write_text(default_calibration_text()[:CALIBRATION_CHARS])
    opts = BuildOptions(calibration=str(calib) if calib else None, samples=1)
    t0 = time.perf_counter()
    art = build(_ck(path), fmt, tmp_path / "out", opts)
    seconds = time.perf_counter() - t0
    _check_layout(family, method, art, path)
    q = score_artifact(art, store)  # reloads through transformers and checks it against the files
    record_property("kld", q.kld_mean)
    record_property("same_top", q.same_top)
    print(f"{family} {fmt.id}: KLD {q.kld_mean:.3e} same-top {q.same_top:.4f} ({seconds:.1f} s)")
    assert math.isfinite(q.kld_mean) and 0 < q.kld_mean < KLD_BOUND[family, method], q.kld_mean


@pytest.mark.slow
def test_mixtral_experts_left_wrong_are_caught(tiny, tmp_path):
    """The loaded model's fused experts are checked against the per-expert w1/w3/w2 tensors
    through transformers' own conversions: a loader that mis-mapped them would be refused."""
    import torch

    from edgekit.formats import BuildOptions, build
    from edgekit.runtimes import transformers as rt
    from edgekit.runtimes.ct_checkpoint import verify_against_checkpoint

    path, _ = tiny("mixtral")
    art = build(_ck(path), get_format("fp8:dynamic"), tmp_path, BuildOptions())
    s = rt.load(art.path)
    assert verify_against_checkpoint(s.model, art.path)["checked_modules"] >= 2 * 4 * 3
    experts = s.model.model.layers[1].mlp.experts
    with torch.no_grad():
        experts.gate_up_proj[2, experts.gate_up_proj.shape[1] // 2 :].normal_()  # expert 2's w3 only
    with pytest.raises(EdgekitError, match=r"experts\.2\.w3 differ"):
        verify_against_checkpoint(s.model, art.path)


# ---- refusals: the family's one line, before anything is loaded ---------------------------


@pytest.mark.parametrize(
    "name", ["gemma-3-1b", "gemma-3-27b", "phi-3.5-mini", "phi-4", "mixtral-8x7b", "deepseek-v3"]
)
def test_catalogue_models_of_these_families_are_buildable(name):
    from edgekit.models.catalogue import resolve

    entry = resolve(name)
    for f in FORMATS.values():
        fmt = get_format(f)
        assert fmt.impl.unbuildable(fmt, entry) == "", (name, f)


@pytest.fixture
def refusing_family():
    """A family as a third party registers one, whose AWQ llm-compressor cannot do."""

    class NoAwq(ArchFamily, model_types=("noawq_test",)):
        producers = frozenset({"llm-compressor"})

        def llm_compressor_refusal(self, a, method):
            return "its norms feed two branches that no AWQ mapping set balances" if method == "awq" else ""

    try:
        yield NoAwq
    finally:
        unregister("noawq_test")


def test_family_refusal_is_one_line_naming_what_works_before_any_load(refusing_family, tmp_path):
    from safetensors.numpy import save_file

    from edgekit.formats import BuildOptions, build
    from edgekit.quantize import awq, compressed

    # a model type transformers does not know and no weights of it: any load would fail otherwise
    ck_dir = tmp_path / "noawq"
    ck_dir.mkdir()
    save_file({"unrelated": np.zeros(1, dtype=np.float32)}, str(ck_dir / "model.safetensors"))
    (ck_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "noawq_test",
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "vocab_size": 640,
                "max_position_embeddings": 2048,
            }
        )
    )
    ck = _ck(ck_dir)
    fmt = get_format("awq:w4g128")
    t0 = time.perf_counter()
    with pytest.raises(EdgekitError) as e:
        build(ck, fmt, tmp_path / "out", BuildOptions())
    assert time.perf_counter() - t0 < 1.0
    line = e.value.one_line()
    assert "\n" not in line and line.startswith("awq: its norms feed two branches")
    assert "gptq:w4g128 and fp8:dynamic work" in line, line
    assert fmt.impl.unbuildable(fmt, ck.entry) == line  # what plan / the main job show
    # the producer itself asks too, when called without the format family's checks
    with pytest.raises(EdgekitError, match="no AWQ mapping set"):
        compressed.build(ck, fmt, awq, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for other in ("gptq:w4g128", "fp8:dynamic"):  # the methods it does not refuse pass the check
        assert get_format(other).impl.unbuildable(get_format(other), ck.entry) == ""


def test_every_family_names_awq_pairs_llm_compressor_has():
    pytest.importorskip("llmcompressor", reason="needs the quant extra (llm-compressor)")
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

    from edgekit.quantize.compressed import awq_mappings

    for family in ("gemma3", "phi3", "mixtral", "deepseek_v2", "deepseek_v3"):
        fam = arch_family(family)
        assert fam.ct_awq_mappings in AWQ_MAPPING_REGISTRY, family
        pairs = awq_mappings(fam)
        assert pairs
        if family == "mixtral":  # the router is balanced with the experts it routes to
            assert any(b.endswith("mlp.gate$") for p in pairs for b in p.balance_layers)
    # DeepSeek's dense first layers have no router: its pairs leave the router out
    for family in ("deepseek_v2", "deepseek_v3"):
        pairs = awq_mappings(arch_family(family)) or []
        assert not any(b.endswith("mlp.gate$") for p in pairs for b in p.balance_layers)
