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


def test_scored_logits_are_the_scored_rows_of_the_full_logits(setup, tiny_qwen3):
    from edgekit.bench.reference import reference_gguf
    from edgekit.models.source import open_checkpoint
    from edgekit.runtimes import llamacpp

    store, session = setup
    toks = store.tokens[1]
    full = session.logits(toks.tolist())
    rows = session.scored_logits(toks, store.first)
    assert rows.shape == (store.per_window, full.shape[1]) and not rows.flags.writeable
    np.testing.assert_allclose(rows, full[store.first : -1], rtol=0, atol=1e-4)
    # two batches of 512: the first batch's rows are kept before the second decode
    long = llamacpp.load(reference_gguf(open_checkpoint(str(tiny_qwen3))), n_ctx=1024)
    try:
        toks = store.tokens[:2].reshape(-1)
        full = long.logits(toks.tolist())
        np.testing.assert_allclose(long.scored_logits(toks, 300), full[300:-1], rtol=0, atol=1e-4)
    finally:
        long.close()


def test_stop_ends_scoring_after_a_window_with_the_positions_so_far(setup):
    store, session = setup
    cand = _Noisy(session, 0.5)
    full = score(cand, store)
    seen = []

    def stop(kl, same, nll_diff):
        seen.append((kl.copy(), same.copy(), nll_diff.copy()))
        return len(seen) == 2

    part = score(cand, store, stop=stop)
    per = store.per_window
    assert [len(s[0]) for s in seen] == [per, 2 * per]
    assert part.windows == 2 and not part.complete and part.positions == 2 * per
    assert full.windows == store.n_windows and full.complete and full.positions == store.positions
    kl, same, diff = seen[-1]
    assert part.kld_mean == pytest.approx(kl.mean(), rel=1e-12)
    assert part.same_top == pytest.approx(same.mean(), rel=1e-12)
    assert part.ppl_ratio == pytest.approx(np.exp(diff.mean()), rel=1e-12)
    assert part.ppl / part.ppl_ref == pytest.approx(part.ppl_ratio, rel=1e-9)
    # the first windows of the whole scoring are the stopped one's
    never = score(cand, store, stop=lambda *a: False)
    assert never.complete and never.kld_mean == pytest.approx(full.kld_mean, rel=1e-12)
    sparse = score_sparse(cand.topk(640), store, stop=lambda kl, same, d: len(kl) >= per)
    assert sparse.windows == 1 and not sparse.complete and sparse.positions == per
    assert sparse.kld_mean == pytest.approx(seen[0][0].mean(), rel=1e-4)


def test_windows_take_bos_in_front_when_the_vocabulary_adds_one():
    from edgekit.bench.quality import first_scored, scored_per_window, windows_of

    w = windows_of(list(range(10, 31)), 8, bos=1)
    assert w.tolist() == [[1, *range(11, 18)], [1, *range(19, 26)]]  # the tail of 5 dropped
    assert windows_of(list(range(16)), 8).tolist()[1][0] == 8
    assert (first_scored(512), scored_per_window(512)) == (256, 255)


def test_a_scoring_goes_on_from_a_saved_state_to_the_same_result(setup, tmp_path):
    from edgekit.bench.quality import ScoreState
    from edgekit.errors import EdgekitError

    store, session = setup
    cand = _Noisy(session, 0.5)
    per = store.per_window
    full = score(cand, store)
    path = tmp_path / "state.npz"
    state = ScoreState()
    part = score(
        cand, store, stop=lambda kl, *a: len(kl) >= 2 * per, state=state, on_window=lambda s: s.save(path)
    )
    assert part.windows == state.windows == 2 and len(state.kl) == 2 * per
    loaded = ScoreState.load(path, store)
    seen = []
    rest = score(cand, store, progress=lambda w, n: seen.append(w), state=loaded)
    assert seen == list(range(3, store.n_windows + 1))  # the saved windows are not scored again
    assert rest.complete and rest.positions == full.positions
    for f in ("kld_mean", "kld_p99", "same_top", "ppl", "ppl_ratio", "kld_stderr"):
        assert getattr(rest, f) == pytest.approx(getattr(full, f), rel=1e-12), f
    assert loaded.windows == store.n_windows  # it now holds every window
    # a state that does not fit the store is refused, not scored on
    ScoreState(1, loaded.kl[:per], loaded.same[:per], loaded.nll[: per - 1]).save(path)
    with pytest.raises(EdgekitError, match="not a partial score"):
        ScoreState.load(path, store)
