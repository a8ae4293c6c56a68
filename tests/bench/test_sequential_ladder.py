"""The sequential test against the full evaluation on every candidate of the default model's
CPU ladder, with and without an importance matrix: an early decision never differs from the
one every window gives, for any of a range of KLD, perplexity and same-top bars.

For CI's time the store is the first third of the evaluation text (4 windows, 1,020 scored
positions), so the test has fewer looks than the job's 14 windows; the decision rule is the
same."""

import numpy as np
import pytest

from edgekit.bench.select import parse_bar
from edgekit.bench.sequential import SequentialTest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch, pytest.mark.slow]

BARS = [
    "kld<=0.005",
    "kld<=0.01",
    "kld<=0.03",
    "kld<=0.1",
    "kld<=0.3",
    "ppl<=+1%",
    "ppl<=+3%",
    "ppl<=+10%",
    "same_top>=0.85",
    "same_top>=0.9",
    "same_top>=0.95",
]


@pytest.fixture(scope="module")
def ladder_scores(smollm2_checkpoint, tmp_path_factory):
    """Every distinct file of the ladder, scored on every window: per-window prefixes of the
    per-position KLD, same-top and NLL difference, and the full result."""
    from edgekit.bench.reference import reference_store, score_path
    from edgekit.formats import default_ladder
    from edgekit.profiles.target import get_target
    from edgekit.quantize.gguf_build import build_gguf
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text()
    store = reference_store(smollm2_checkpoint, text[: len(text) * 10 // 33])
    assert store.n_windows >= 3
    out = tmp_path_factory.mktemp("ladder")
    types = [f.variant for f in default_ladder(get_target("cpu").device) if f.family == "gguf"]
    scored: dict[str, tuple] = {}
    for imatrix in ("auto", "none"):
        for ty in types:
            art = build_gguf(smollm2_checkpoint, ty, out, imatrix=imatrix)
            if art.manifest.sha256 in {s[0] for s in scored.values()}:
                continue  # Q8_0 ignores the importance matrix; Q2_K = Q3_K_S here
            seen: list[tuple] = []

            def record(kl, same, diff, seen=seen):
                seen.append((kl.copy(), same.copy(), diff.copy()))
                return False

            q = score_path(art.path, "gguf", store, "llama.cpp", stop=record)
            scored[f"{ty}/{imatrix}"] = (art.manifest.sha256, q, seen)
    return store, scored


def test_the_ladder_is_scored_whole(ladder_scores):
    store, scored = ladder_scores
    assert len(scored) >= 16
    for _, q, seen in scored.values():
        assert q.complete and len(seen) == store.n_windows and q.positions == len(seen[-1][0])


def test_early_decisions_never_differ_from_the_full_evaluation(ladder_scores):
    store, scored = ladder_scores
    early = total = 0
    flips = []
    for text in BARS:
        bar = parse_bar(text)
        for name, (_, q, seen) in scored.items():
            test = SequentialTest(bar, store.n_windows)
            for kl, same, diff in seen:
                if test.stop(kl, same, diff):
                    break
            total += 1
            if test.decision is None:
                continue
            assert len(test.looks) <= store.n_windows
            early += len(test.looks) < store.n_windows
            if (test.decision == "pass") != bar.passes(q):
                flips.append((text, name, test.to_dict(), q.kld_mean))
    assert not flips
    # the test earns its keep: most (candidate, bar) pairs are settled before the last window
    assert early / total > 0.6, (early, total)
    print(f"decided early: {early} of {total} (candidate, bar) pairs")


def test_the_statistics_recorded_are_the_results(ladder_scores):
    _, scored = ladder_scores
    for _, q, seen in scored.values():
        kl, same, diff = seen[-1]
        assert float(np.mean(kl)) == pytest.approx(q.kld_mean, rel=1e-6)
        assert float(np.mean(same)) == pytest.approx(q.same_top, rel=1e-6)
        assert float(np.exp(np.mean(diff))) == pytest.approx(q.ppl_ratio, rel=1e-6)
