import pytest

from edgekit.errors import UnknownName
from edgekit.models import catalogue, get, resolve

REQUIRED = [
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "deepseek-v3",
    "gemma-3-270m",
    "gemma-3-1b",
    "gemma-3-4b",
    "gemma-3-27b",
    "phi-3.5-mini",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
]


def test_catalogue_has_every_required_entry():
    assert set(REQUIRED) <= set(catalogue())


def test_every_entry_has_license_tier_and_hub_id():
    for e in catalogue().values():
        assert e.hub_id and "/" in e.hub_id
        assert e.license.tier in ("permissive", "conditional", "research")


def test_llama_license_names_the_mau_clause():
    conds = " ".join(get("llama-3.1-8b").license.conditions)
    assert "700 million" in conds


def test_lookup_by_hub_id_and_case():
    assert get("Qwen/Qwen3-8B").name == "qwen3-8b"
    assert get("QWEN3-8B").name == "qwen3-8b"


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownName) as ei:
        get("qwen3-9b")
    assert "qwen3-8b" in ei.value.one_line()


def test_resolve_local_directory(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen3", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,'
        ' "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 1000,'
        ' "tie_word_embeddings": true, "max_position_embeddings": 512}'
    )
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    e = resolve(str(tmp_path))
    assert e.arch.head_dim == 32 and e.license.tier == "permissive" and e.source.endswith("config.json")
