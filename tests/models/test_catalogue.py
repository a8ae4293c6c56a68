import json

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
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
    # issue 14: the open checkpoints the landscape names (sources in docs/catalogue.md)
    "qwen2.5-7b",
    "qwen2.5-72b",
    "deepseek-r1",
    "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-llama-70b",
    "mistral-small-3-24b",
    "mistral-large-2",
    "falcon3-10b",
    "yi-1.5-34b",
    "phi-4",
    "gemma-2-9b",
    "gemma-2-27b",
    "dbrx",
    "llama-4-scout",
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


# issue 14 entries: license key and tier (docs/catalogue.md, "Licenses of the issue-14 entries")
NEW_LICENSES = {
    "qwen2.5-7b": ("apache-2_0", "permissive"),
    "qwen2.5-72b": ("qwen", "conditional"),
    "deepseek-r1": ("mit", "permissive"),
    "deepseek-r1-distill-qwen-32b": ("mit", "permissive"),
    "deepseek-r1-distill-llama-70b": ("llama3_3", "conditional"),
    "mistral-small-3-24b": ("apache-2_0", "permissive"),
    "mistral-large-2": ("mrl", "research"),
    "falcon3-10b": ("falcon3", "conditional"),
    "yi-1.5-34b": ("apache-2_0", "permissive"),
    "phi-4": ("mit", "permissive"),
    "gemma-2-9b": ("gemma", "conditional"),
    "gemma-2-27b": ("gemma", "conditional"),
    "dbrx": ("dbrx", "conditional"),
    "llama-4-scout": ("llama4", "conditional"),
}


@pytest.mark.parametrize("name", NEW_LICENSES)
def test_new_entries_resolve_with_license_and_tier(name):
    e = resolve(name)
    assert e.name == name and resolve(e.hub_id or "").name == name
    key, tier = NEW_LICENSES[name]
    assert e.license.key == key and e.license.tier == tier
    assert e.license.url.startswith("https://") and e.license.conditions


def test_every_license_has_a_tier_url_and_conditions():
    from edgekit.models.catalogue import licenses

    for lic in licenses().values():
        assert lic.tier in ("permissive", "conditional", "research"), lic.key
        assert lic.url.startswith("https://") and lic.conditions, lic.key


def test_llama4_and_dbrx_licenses_name_their_mau_clause():
    for name in ("llama-4-scout", "deepseek-r1-distill-llama-70b", "dbrx"):
        assert "700 million" in " ".join(get(name).license.conditions), name
    assert "100 million" in " ".join(get("qwen2.5-72b").license.conditions)


@pytest.mark.parametrize("name", ["llama-4-scout", "dbrx", "gemma-2-27b", "phi-4", "mistral-large-2"])
def test_models_show_json_answers_the_checklist(name):
    r = CliRunner().invoke(cli, ["models", "show", name, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    e = get(name)
    total, active = e.arch.param_counts()
    assert d["license"]["tier"] == e.license.tier and d["license"]["name"] == e.license.name
    assert d["params_total"] == total and d["params_active"] == active
    assert d["context"] == e.arch.max_context and d["moe"] == e.arch.is_moe
    assert d["tokenizer"] == e.tokenizer


def test_every_entry_states_its_tokenizer():
    for e in catalogue().values():
        assert e.tokenizer.startswith(("byte-level BPE", "SentencePiece")), e.name


def test_tokenizer_of_a_local_checkpoint_is_read_from_its_files(tiny_tokenizer, tmp_path):
    import shutil

    from edgekit.models.catalogue import _tokenizer_of_dir

    shutil.copy(tiny_tokenizer / "tokenizer.json", tmp_path / "tokenizer.json")
    n = len(json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]) + 3
    assert _tokenizer_of_dir(tmp_path) == f"byte-level BPE (tokenizer.json, {n:,} tokens)"
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert _tokenizer_of_dir(tmp_path) == "SentencePiece (tokenizer.model)"
    assert _tokenizer_of_dir(tmp_path / "missing") == ""


def test_tokenizer_of_a_gguf_file_is_read_from_its_metadata():
    from edgekit.models.catalogue import from_gguf
    from tests.models.test_gguf_arch import embedded_gguf

    assert from_gguf(embedded_gguf()).tokenizer == (
        "byte-level BPE (tokenizer.ggml.model gpt2, pre-tokenizer smollm, 49,152 tokens)"
    )


@pytest.mark.parametrize("name", list(NEW_LICENSES))
def test_plan_runs_for_new_entries(name):
    r = CliRunner().invoke(cli, ["plan", name, "--target", "h100", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["model"]["name"] == name and d["rows"]
