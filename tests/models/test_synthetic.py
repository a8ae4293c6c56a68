"""Random-weight checkpoints with real shapes: the tensor list is exactly what transformers
builds for the config, and the file loads with every key matched."""

import json

import pytest

from edgekit.errors import EdgekitError
from edgekit.models.catalogue import resolve
from edgekit.models.synthetic import hf_config, hf_tensors, random_checkpoint


@pytest.mark.parametrize(("model", "layers"), [("qwen3-30b-a3b", 2), ("qwen3-235b-a22b", 1), ("qwen3-8b", 3)])
def test_tensors_are_what_transformers_builds(model, layers):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    arch = resolve(model).arch
    cfg = transformers.AutoConfig.for_model(**hf_config(arch, layers))
    with torch.device("meta"):
        m = transformers.AutoModelForCausalLM.from_config(cfg)
    want = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    if arch.tied_embeddings:
        want.pop("lm_head.weight", None)
    got = dict(hf_tensors(arch, layers))
    # transformers 5 keeps a MoE layer's experts fused (gate_up_proj / down_proj); compare the elements
    if any(".mlp.experts.gate_up_proj" in k for k in want):
        assert sum(map(_n, got.values())) == sum(map(_n, want.values()))
        assert {k for k in got if ".experts." not in k} == {k for k in want if ".experts" not in k}
    else:
        assert got == want


def _n(shape):
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.slow
def test_written_checkpoint_loads_with_every_key(tmp_path, tiny_tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from edgekit.models.catalogue import from_local

    d = random_checkpoint(
        "qwen3-0.6b", tmp_path / "r", layers=1, tokenizer_dir=tiny_tokenizer, max_context=4096
    )
    assert sorted(p.name for p in d.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        d, output_loading_info=True, dtype=torch.bfloat16
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    w = model.model.layers[0].self_attn.q_proj.weight.detach().float()
    assert 0.015 < float(w.std()) < 0.025 and float(model.model.norm.weight.detach().float().mean()) == 1.0
    a, real = from_local(d).arch, resolve("qwen3-0.6b").arch
    assert (a.hidden, a.n_heads, a.n_kv_heads, a.head_dim, a.vocab, a.n_layers) == (
        real.hidden,
        real.n_heads,
        real.n_kv_heads,
        real.head_dim,
        real.vocab,
        1,
    )
    assert json.loads((d / "config.json").read_text())["max_position_embeddings"] == 4096


def test_refusals(tmp_path):
    with pytest.raises(EdgekitError, match="between 1 and 28"):
        random_checkpoint("qwen3-0.6b", tmp_path / "x", layers=29)
    with pytest.raises(EdgekitError, match="random checkpoints are built for"):
        random_checkpoint("smollm2-135m", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
