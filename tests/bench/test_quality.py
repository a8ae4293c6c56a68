"""The quality store against direct computation on full llama-cpp-python logits."""

import numpy as np
import pytest

from tests.quantize.gguf_util import log_softmax

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2_setup(smollm2_checkpoint, tmp_path_factory):
    from edgekit.bench.reference import reference_gguf, reference_store
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text()[:12000]  # about four windows of 512 tokens
    store = reference_store(smollm2_checkpoint, text)
    d = tmp_path_factory.mktemp("cands")
    cands = {}
    for mix in ("Q4_K_M", "Q3_K_M"):
        cands[mix] = d / f"{mix}.gguf"
        convert(smollm2_checkpoint, cands[mix], Recipe(mix=mix))
    return store, reference_gguf(smollm2_checkpoint), cands


def full_metrics(ref_path, cand_path, store):
    """Full-vocabulary KLD and NLL, straight from llama-cpp-python logits."""
    from edgekit.runtimes import llamacpp

    ref = llamacpp.load(ref_path, n_ctx=512)
    cand = llamacpp.load(cand_path, n_ctx=512)
    first = store.first  # rows first .. window-2 predict tokens first+1 .. window-1
    kl, nll = [], []
    for w in range(store.n_windows):
        toks = store.tokens[w].tolist()
        p = log_softmax(ref.logits(toks)[first:-1].astype(np.float64))
        qq = log_softmax(cand.logits(toks)[first:-1].astype(np.float64))
        kl.append((np.exp(p) * (p - qq)).sum(-1))
        nll.append(-qq[np.arange(len(qq)), toks[first + 1 :]])
    return np.concatenate(kl), np.concatenate(nll)


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q3_K_M"])
def test_topk_kld_is_within_2_percent_of_full_kld_and_ppl_is_exact(mix, smollm2_setup, record_property):
    from edgekit.bench.reference import score_gguf

    store, ref_path, cands = smollm2_setup
    q = score_gguf(cands[mix], store)
    full_kl, nll = full_metrics(ref_path, cands[mix], store)
    rel = (full_kl.mean() - q.kld_mean) / full_kl.mean()
    record_property("topk_vs_full_rel_gap", float(rel))
    print(f"{mix}: stored-token KLD {q.kld_mean:.5f}, full {full_kl.mean():.5f}, gap {100 * rel:.2f}%")
    assert q.positions == len(full_kl)
    assert -1e-4 <= rel <= 0.02  # a lower bound, and a close one
    assert q.ppl == pytest.approx(float(np.exp(nll.mean())), rel=1e-4)


def test_reference_store_is_cached(smollm2_checkpoint, smollm2_setup):
    import time

    from edgekit.bench.reference import reference_store
    from edgekit.text import default_evaluation_text

    store, _, _ = smollm2_setup
    t0 = time.perf_counter()
    again = reference_store(smollm2_checkpoint, default_evaluation_text()[:12000])
    assert time.perf_counter() - t0 < 5
    assert np.array_equal(again.top_ids, store.top_ids) and again.meta == store.meta
