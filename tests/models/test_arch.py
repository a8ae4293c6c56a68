"""Architecture arithmetic against published figures (docs/references.md)."""

import pytest

from edgekit.models import get

# total / active parameters, docs/references.md "Qwen3 architecture facts"
QWEN3 = {
    "qwen3-0.6b": (0.60e9, None),
    "qwen3-1.7b": (1.72e9, None),
    "qwen3-4b": (4.02e9, None),
    "qwen3-8b": (8.19e9, None),
    "qwen3-14b": (14.77e9, None),
    "qwen3-32b": (32.76e9, None),
    "qwen3-30b-a3b": (30.53e9, 3.35e9),
    "qwen3-235b-a22b": (235.09e9, 22.19e9),
}


@pytest.mark.parametrize("name", QWEN3)
def test_qwen3_parameter_counts_match_published(name):
    total, active = get(name).arch.param_counts()
    want_total, want_active = QWEN3[name]
    # within 0.5 %, or within the rounding of the published figure (0.60B has two digits)
    assert abs(total - want_total) <= max(0.005 * want_total, 0.005e9)
    if want_active:
        assert abs(active / want_active - 1) < 0.005
    else:
        assert active == total


def test_qwen3_0_6b_non_embedding_params():
    a = get("qwen3-0.6b").arch
    total, _ = a.param_counts()
    assert round((total - a.vocab * a.hidden) / 1e9, 2) == 0.44  # model card: 0.44B non-embedding


def test_qwen3_8b_kv_cache_per_token():
    a = get("qwen3-8b").arch
    assert a.kv_bytes_per_token(2.0) == 147_456  # 2 x 36 x 8 x 128 x 2
    assert a.kv_bytes(32768) == 147_456 * 32768


def test_other_families_published_totals():
    # model cards: Llama-3.1-8B 8.03B, Mixtral-8x7B 46.7B total / 12.9B active,
    # DeepSeek-V3 671B + 14B MTP = 685B total, 37B active; Phi-3.5-mini 3.8B
    assert abs(get("llama-3.1-8b").arch.param_counts()[0] / 8.03e9 - 1) < 0.005
    t, a = get("mixtral-8x7b").arch.param_counts()
    assert abs(t / 46.7e9 - 1) < 0.005 and abs(a / 12.9e9 - 1) < 0.01
    t, a = get("deepseek-v3").arch.param_counts()
    assert abs(t / 685e9 - 1) < 0.01 and abs(a / 37e9 - 1) < 0.03
    assert abs(get("phi-3.5-mini").arch.param_counts()[0] / 3.82e9 - 1) < 0.01


def test_moe_kv_cache_uses_kv_heads_and_mla_uses_latent():
    assert get("qwen3-30b-a3b").arch.kv_bytes_per_token(2.0) == 2 * 48 * 4 * 128 * 2
    ds = get("deepseek-v3").arch
    assert ds.kv_bytes_per_token(2.0) == 61 * (512 + 64) * 2


def test_sliding_window_layers_keep_only_their_window():
    g = get("gemma-3-27b").arch
    n_global = sum(not g.is_sliding_layer(i) for i in range(g.n_layers))
    assert n_global == 10  # every 6th of 62 layers
    per_layer = 2 * g.n_kv_heads * g.head_dim * 2
    ctx = 32768
    assert g.kv_bytes(ctx) == per_layer * (n_global * ctx + (g.n_layers - n_global) * g.sliding_window)


def test_tied_embeddings_have_no_output_tensor():
    names = {t.name for t in get("qwen3-0.6b").arch.tensors()}
    assert "output.weight" not in names and "token_embd.weight" in names
    names = {t.name for t in get("qwen3-8b").arch.tensors()}
    assert "output.weight" in names
