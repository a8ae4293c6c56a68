"""config.json parsing: dense, MoE, tied/untied, nested text configs, malformed input."""

import json

import pytest

from edgekit.errors import ConfigError
from edgekit.models import get
from edgekit.models.hf_config import arch_from_config, load_config_json

QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "attention_bias": False,
}

QWEN3_30B_A3B = {
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "decoder_sparse_step": 1,
}

LLAMA_31_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
}


def test_head_dim_is_read_not_derived():
    a = arch_from_config(QWEN3_4B)
    assert a.head_dim == 128 and a.hidden // a.n_heads == 80
    assert a.kv_bytes_per_token() == get("qwen3-4b").arch.kv_bytes_per_token()


def test_dense_config_matches_catalogue():
    for cfg, name in ((QWEN3_4B, "qwen3-4b"), (LLAMA_31_8B, "llama-3.1-8b")):
        a, b = arch_from_config(cfg), get(name).arch
        assert a.param_counts() == b.param_counts()
        assert a.kv_bytes_per_token() == b.kv_bytes_per_token()
        assert a.tied_embeddings == b.tied_embeddings


def test_moe_config_matches_catalogue():
    a = arch_from_config(QWEN3_30B_A3B)
    assert a.is_moe and a.n_experts == 128 and a.expert_ffn == 768 and a.ffn == 0
    assert a.param_counts() == get("qwen3-30b-a3b").arch.param_counts()


def test_mixtral_experts_use_intermediate_size():
    cfg = {
        **LLAMA_31_8B,
        "model_type": "mixtral",
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
        "rope_theta": 1e6,
        "max_position_embeddings": 32768,
    }
    a = arch_from_config(cfg)
    assert a.expert_ffn == 14336 and a.param_counts() == get("mixtral-8x7b").arch.param_counts()


def test_gemma3_multimodal_text_config_with_defaults():
    # the official gemma-3-4b-it config leaves heads, vocab and context to transformers' defaults
    cfg = {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 34,
            "sliding_window": 1024,
            "rope_scaling": {"factor": 8.0},
        },
        "vision_config": {"model_type": "siglip_vision_model"},
    }
    a = arch_from_config(cfg)
    b = get("gemma-3-4b").arch
    assert (a.n_heads, a.n_kv_heads, a.head_dim, a.vocab, a.max_context) == (8, 4, 256, 262208, 131072)
    assert a.tied_embeddings and a.sliding_window == 1024 and a.sliding_window_pattern == 6
    assert a.param_counts()[0] == b.param_counts()[0] - b.extra_params


def test_untied_default_for_llama_and_explicit_tie():
    cfg = dict(LLAMA_31_8B)
    del cfg["tie_word_embeddings"]
    assert not arch_from_config(cfg).tied_embeddings
    assert arch_from_config({**cfg, "tie_word_embeddings": True}).tied_embeddings


@pytest.mark.parametrize(
    "patch,key",
    [
        ({"num_hidden_layers": "36"}, "num_hidden_layers"),
        ({"hidden_size": -1}, "hidden_size"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
        ({"model_type": "mamba_xl"}, "model_type"),
        ({"vocab_size": None}, "vocab_size"),
    ],
)
def test_malformed_values_name_the_key(patch, key):
    with pytest.raises(ConfigError) as ei:
        arch_from_config({**QWEN3_4B, **patch}, "some/config.json")
    assert ei.value.key == key and "some/config.json" in ei.value.one_line()


def test_missing_key_is_named():
    cfg = dict(QWEN3_4B)
    del cfg["num_attention_heads"]
    with pytest.raises(ConfigError) as ei:
        arch_from_config(cfg, "x.json")
    assert ei.value.key == "num_attention_heads"


def test_unreadable_json_names_the_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "qwen3", ')
    with pytest.raises(ConfigError) as ei:
        load_config_json(tmp_path)
    assert str(p) in ei.value.one_line() and "JSON" in ei.value.one_line()
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError):
        load_config_json(p)
