"""score_sparse (top-K prompt log-probabilities, how vLLM is scored) against score (full
logits) on the same candidate: equal when K is the whole vocabulary, a lower bound below it."""

import numpy as np
import pytest

from edgekit.bench.quality import score, score_sparse, topk_from_logits

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]


class _Noisy:
    """The reference GGUF's logits plus fixed Gaussian noise: a candidate with a real, known
    divergence, served as full logits (for score) or as top-K (for score_sparse)."""

    def __init__(self, session, sigma: float, seed: int = 0):
        self.s, self.sigma, self.seed = session, sigma, seed

    def logits(self, tokens):
        x = np.asarray(self.s.logits(tokens), np.float32)
        rng = np.random.default_rng(self.seed + sum(tokens[:8]))
        return x + rng.normal(0, self.sigma, x.shape).astype(np.float32)

    def topk(self, k):
        return lambda tokens: topk_from_logits(self.logits(tokens), list(tokens), k)


@pytest.fixture(scope="module")
def setup(tiny_qwen3):
    from edgekit.bench.reference import reference_gguf, reference_store
    from edgekit.models.source import open_checkpoint
    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    ck = open_checkpoint(str(tiny_qwen3))
    store = reference_store(ck, default_evaluation_text()[:6000])
    session = llamacpp.load(reference_gguf(ck), n_ctx=store.key.window)
    yield store, session
    session.close()


def test_whole_vocabulary_equals_the_full_logit_score(setup):
    store, session = setup
    cand = _Noisy(session, 0.5)
    full = score(cand, store)
    sparse = score_sparse(cand.topk(640), store)
    assert full.kld_mean > 1e-3  # the noise is a real divergence
    assert sparse.kld_mean == pytest.approx(full.kld_mean, rel=1e-4)
    assert sparse.same_top == full.same_top
    assert sparse.ppl == pytest.approx(full.ppl, rel=1e-6)
    assert sparse.ppl_ratio == pytest.approx(full.ppl_ratio, rel=1e-6)


def test_fewer_tokens_give_a_lower_bound_that_tightens_with_k(setup):
    store, session = setup
    cand = _Noisy(session, 0.5)
    full = score(cand, store).kld_mean
    klds = {k: score_sparse(cand.topk(k), store).kld_mean for k in (8, 64, 256)}
    assert klds[8] <= klds[64] * 1.001 <= klds[256] * 1.001 <= full * 1.001
    assert klds[256] >= 0.9 * full  # K = 256 of 640 holds almost all of this candidate's divergence
    # same-top and perplexity do not depend on K
    a, b = score_sparse(cand.topk(8), store), score_sparse(cand.topk(256), store)
    assert a.same_top == b.same_top and a.ppl == pytest.approx(b.ppl, rel=1e-9)


def test_the_unperturbed_reference_scores_zero(setup):
    store, session = setup
    q = score_sparse(_Noisy(session, 0.0).topk(64), store)
    assert q.kld_mean < 1e-6 and q.same_top == 1.0 and q.ppl_ratio == pytest.approx(1.0, abs=1e-5)
