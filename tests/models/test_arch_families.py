"""Architecture families: one module each, registered by a class argument; a third party's
family (a subclass, or a module behind the `edgekit.architectures` entry point) is read from a
config.json with no edit to edgekit; the producers matrix is what edgekit supports."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator

import pytest

from edgekit.errors import ConfigError, EdgekitError
from edgekit.models.arch import (
    PRODUCERS,
    Arch,
    ArchFamily,
    Tensor,
    arch_family,
    block_tensor,
    families,
    known_model_types,
    model_types_supported_by,
    unregister,
)
from edgekit.models.catalogue import catalogue, get, resolve
from edgekit.models.hf_config import arch_from_config

BUILT_IN = [
    "dbrx",
    "deepseek_v2",
    "deepseek_v3",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "llama",
    "llama4",
    "llama4_text",
    "mistral",
    "mixtral",
    "phi3",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "smollm3",
]

TOY_CONFIG = {
    "model_type": "toyformer",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
}


def test_every_catalogue_entry_resolves_to_a_family():
    for entry in catalogue().values():
        impl = arch_family(entry.arch)
        assert entry.arch.family in impl.model_types, entry.name
        assert entry.arch.tensors(), entry.name


def test_built_in_model_types_and_one_family_per_module():
    assert known_model_types() == BUILT_IN
    assert arch_family("gemma3_text") is arch_family("gemma3")
    assert arch_family("mistral") is not arch_family("llama")  # a Llama subclass: its own producers
    assert isinstance(arch_family("mistral"), type(arch_family("llama")))
    assert {f.name for f in families()} >= {"llama", "qwen3", "qwen3_moe", "gemma3", "deepseek_v3"}


def test_unknown_model_type_names_the_known_ones():
    with pytest.raises(EdgekitError, match="unsupported architecture 'gpt2'") as e:
        arch_family("gpt2")
    assert e.value.hint == f"known: {', '.join(BUILT_IN)}"
    with pytest.raises(ConfigError) as e2:
        arch_from_config({**TOY_CONFIG, "model_type": "gpt2"})
    assert e2.value.message == (
        f"config.json: key 'model_type': unsupported architecture 'gpt2' (known: {', '.join(BUILT_IN)})"
    )


# ---- the producers matrix: what edgekit builds from which model type -----------------------

PRODUCERS_MATRIX = {
    # edgekit's one-pass converter (quantize/gguf.py's SUPPORTED before the families)
    "gguf": [
        "deepseek_v2",
        "deepseek_v3",
        "gemma3",
        "gemma3_text",
        "llama",
        "mistral",
        "mixtral",
        "phi3",
        "qwen2",
        "qwen3",
        "qwen3_moe",
    ],
    # the llm-compressor GPTQ / AWQ / FP8 path (quantize/compressed.py's SUPPORTED)
    "llm-compressor": [
        "deepseek_v2",
        "deepseek_v3",
        "gemma3",
        "gemma3_text",
        "llama",
        "mistral",
        "mixtral",
        "phi3",
        "qwen2",
        "qwen3",
        "qwen3_moe",
    ],
    # architectures the ONNX export is tested on (onnx_export.TESTED)
    "onnx": ["llama", "qwen3", "qwen3_moe"],
    # random-weight checkpoints (models/synthetic.py)
    "synthetic": ["qwen3", "qwen3_moe"],
}


def test_producers_matrix_is_todays():
    assert set(PRODUCERS_MATRIX) == set(PRODUCERS)
    for producer, model_types in PRODUCERS_MATRIX.items():
        assert model_types_supported_by(producer) == model_types, producer
        for mt in BUILT_IN:
            assert arch_family(mt).supports(producer) == (mt in model_types), (producer, mt)
    with pytest.raises(ValueError, match="unknown producer"):
        model_types_supported_by("exl3")


def test_gguf_names_of_the_converted_families():
    from edgekit.quantize import gguf

    want = {
        "deepseek_v2": "DEEPSEEK2",
        "deepseek_v3": "DEEPSEEK2",
        "gemma3": "GEMMA3",
        "gemma3_text": "GEMMA3",
        "llama": "LLAMA",
        "mistral": "LLAMA",
        "mixtral": "LLAMA",
        "phi3": "PHI3",
        "qwen2": "QWEN2",
        "qwen3": "QWEN3",
        "qwen3_moe": "QWEN3MOE",
    }
    assert gguf.SUPPORTED == want
    assert {mt: arch_family(mt).gguf_arch for mt in want} == want
    assert all(arch_family(mt).gguf_arch is None for mt in BUILT_IN if mt not in want)
    dbrx = get("dbrx").arch
    with pytest.raises(EdgekitError) as e:
        gguf.gguf_arch_name(dbrx)
    assert e.value.one_line() == (
        "GGUF conversion of 'dbrx' models is not supported yet "
        "(supported: deepseek_v2, deepseek_v3, gemma3, gemma3_text, llama, mistral, mixtral, phi3, qwen2, "
        "qwen3, qwen3_moe)"
    )


def test_gguf_rules_of_llama_and_qwen():
    llama = get("llama-3.1-8b").arch
    impl = arch_family(llama)
    assert impl.gguf_unpermute_heads(llama, "blk.0.attn_q.weight") == llama.n_heads
    assert impl.gguf_unpermute_heads(llama, "blk.0.attn_k.weight") == llama.n_kv_heads
    assert impl.gguf_unpermute_heads(llama, "blk.0.attn_v.weight") is None
    assert impl.gguf_unpermute_heads(llama, "blk.0.attn_q.bias") is None
    assert impl.gguf_metadata(llama) == {"rope.dimension_count": llama.head_dim}
    qwen = get("qwen3-8b").arch
    assert arch_family(qwen).gguf_unpermute_heads(qwen, "blk.0.attn_q.weight") is None
    assert arch_family(qwen).gguf_metadata(qwen) == {}


def test_mix_70b_quirk():
    llama = get("llama-3.1-8b").arch
    assert not arch_family(llama).gguf_mix_is_70b(llama)
    big = Arch(**{**llama.to_dict(), "n_layers": 80, "notes": ()})
    assert arch_family(big).gguf_mix_is_70b(big)
    qwen2 = Arch(**{**big.to_dict(), "family": "qwen2", "n_kv_heads": big.n_heads, "notes": ()})
    assert arch_family(qwen2).gguf_mix_is_70b(qwen2)
    qwen3 = Arch(**{**big.to_dict(), "family": "qwen3", "notes": ()})
    assert not arch_family(qwen3).gguf_mix_is_70b(qwen3)


def test_family_tensor_variants():
    def names(model: str) -> set[str]:
        return {t.name for t in get(model).arch.tensors() if t.layer == 0}

    assert {"blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"} <= names("phi-3.5-mini")
    assert "blk.0.ffn_gate.weight" not in names("phi-3.5-mini")
    assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= names("gemma-3-27b")
    ds = {t.name for t in get("deepseek-v3").arch.tensors()}
    assert {"blk.0.attn_kv_a_mqa.weight", "blk.0.attn_q_a.weight", "blk.5.exp_probs_b.bias"} <= ds
    assert "blk.0.exp_probs_b.bias" not in ds  # the first 3 layers are dense
    assert "blk.0.attn_q_norm.weight" in names("qwen3-8b")


# ---- a third party's family ----------------------------------------------------------------


@pytest.fixture
def toy_family() -> Iterator[type[ArchFamily]]:
    class ToyFormer(ArchFamily, model_types=("toyformer",)):
        """Llama attention, a per-block scale, and no MLP gate."""

        qk_norm = True
        tied_default = True
        config_defaults = {"rope_theta": 50000.0}
        producers = frozenset({"onnx"})

        def dense_mlp(self, a: Arch, i: int) -> list[Tensor]:
            return [
                block_tensor(i, "ffn_up.weight", (a.hidden, a.ffn), "ffn"),
                block_tensor(i, "ffn_down.weight", (a.ffn, a.hidden), "ffn"),
                block_tensor(i, "toy_scale.weight", (a.hidden,), "norm"),
            ]

    try:
        yield ToyFormer
    finally:
        unregister("toyformer")


def test_toy_family_is_read_from_its_config(toy_family, tmp_path):
    a = arch_from_config(TOY_CONFIG)
    assert a.family == "toyformer"
    assert isinstance(arch_family(a), toy_family)
    assert a.qk_norm and a.tied_embeddings and a.rope_theta == 50000.0
    names = [t.name for t in a.tensors() if t.layer == 1]
    assert names == [
        "blk.1.attn_norm.weight",
        "blk.1.attn_q.weight",
        "blk.1.attn_k.weight",
        "blk.1.attn_v.weight",
        "blk.1.attn_output.weight",
        "blk.1.attn_q_norm.weight",
        "blk.1.attn_k_norm.weight",
        "blk.1.ffn_norm.weight",
        "blk.1.ffn_up.weight",
        "blk.1.ffn_down.weight",
        "blk.1.toy_scale.weight",
    ]
    assert "output.weight" not in {t.name for t in a.tensors()}
    assert "toyformer" in known_model_types()
    assert model_types_supported_by("onnx") == ["llama", "qwen3", "qwen3_moe", "toyformer"]
    # a local checkpoint directory of that architecture: a catalogue entry from its config
    (tmp_path / "config.json").write_text(json.dumps(TOY_CONFIG))
    entry = resolve(str(tmp_path))
    assert entry.arch == a and entry.arch.param_counts()[0] > 0


def test_toy_family_is_gone_after_unregister(toy_family):
    unregister("toyformer")
    with pytest.raises(ConfigError, match="unsupported architecture 'toyformer'"):
        arch_from_config(TOY_CONFIG)


def test_a_family_the_converter_supports_needs_its_gguf_name():
    with pytest.raises(TypeError, match="gguf_arch"):

        class NoName(ArchFamily, model_types=("noname",)):
            producers = frozenset({"gguf"})

    with pytest.raises(TypeError, match="unknown producers"):

        class Typo(ArchFamily, model_types=("typo",)):
            producers = frozenset({"ggfu"})

    assert "noname" not in known_model_types() and "typo" not in known_model_types()


TOY_MODULE = """
from edgekit.models.arch import ArchFamily


class Plugged(ArchFamily, model_types=("pluggedformer",)):
    qkv_bias = True
"""


def test_entry_point_family_is_loaded_on_a_miss(tmp_path, monkeypatch):
    (tmp_path / "toy_arch_plugin.py").write_text(TOY_MODULE)
    di = tmp_path / "toy_arch_plugin-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-arch-plugin\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text("[edgekit.architectures]\npluggedformer = toy_arch_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    from edgekit.plugins import import_group

    import_group.cache_clear()  # look at the installed distributions again
    try:
        a = arch_from_config({**TOY_CONFIG, "model_type": "pluggedformer"})
        assert a.family == "pluggedformer" and a.qkv_bias
        assert "blk.0.attn_q.bias" in {t.name for t in a.tensors()}
    finally:
        unregister("pluggedformer")
        sys.modules.pop("toy_arch_plugin", None)
        import_group.cache_clear()
