"""The sequential test on synthetic per-position data: its t quantile, what it decides early,
and that it leaves a candidate near the bar to the full evaluation."""

import math

import numpy as np
import pytest

from edgekit.bench.select import parse_bar
from edgekit.bench.sequential import SequentialTest, t_quantile

WINDOW = 255  # llama-perplexity's scored positions per 512-token window


def _upper_tail(x: float, dof: int) -> float:
    xs = np.linspace(x, x + 4000, 2_000_001)
    c = math.gamma((dof + 1) / 2) / (math.sqrt(dof * math.pi) * math.gamma(dof / 2))
    return float(np.trapezoid(c * (1 + xs**2 / dof) ** (-(dof + 1) / 2), xs))


@pytest.mark.parametrize("dof", [8, 14, 29, 100])
def test_t_quantile_matches_the_t_distribution(dof):
    p = 1 - 1e-3 / 28
    assert _upper_tail(t_quantile(p, dof), dof) == pytest.approx(1 - p, rel=0.02)


def _kld(mean, n, rng):
    # per-position KLDs are heavy-tailed and correlated along the text: a smoothed lognormal
    x = rng.lognormal(0.0, 1.5, n + 8)
    x = np.convolve(x, np.ones(8) / 8, mode="valid")[:n]
    return x * (mean / x.mean())


def _run(test, kl):
    zeros = np.zeros_like(kl)
    for w in range(1, test.windows + 1):
        if test.stop(kl[: w * WINDOW], zeros[: w * WINDOW], zeros[: w * WINDOW]):
            return w
    return None


@pytest.mark.parametrize("factor,decision", [(0.1, "pass"), (10.0, "fail")])
def test_ten_times_under_or_over_the_bar_is_decided_in_a_window_or_two(factor, decision):
    rng = np.random.default_rng(0)
    test = SequentialTest(parse_bar("kld<=0.03"), windows=14)
    w = _run(test, _kld(0.03 * factor, 14 * WINDOW, rng))
    assert w is not None and w <= 2 and test.decision == decision


def test_close_to_the_bar_runs_to_the_end():
    rng = np.random.default_rng(1)
    test = SequentialTest(parse_bar("kld<=0.03"), windows=14)
    assert _run(test, _kld(0.0305, 14 * WINDOW, rng)) is None
    assert test.to_dict()["decided"] is None and test.to_dict()["after_windows"] == 14


def test_early_decisions_agree_with_the_true_mean():
    # 400 candidates with means spread around the bar: an early decision is never the wrong side
    rng = np.random.default_rng(2)
    wrong = early = 0
    for mean in np.exp(rng.uniform(math.log(0.003), math.log(0.3), 400)):
        test = SequentialTest(parse_bar("kld<=0.03"), windows=14)
        if _run(test, _kld(mean, 14 * WINDOW, rng)) is not None:
            early += 1
            wrong += test.decision != ("pass" if mean <= 0.03 else "fail")
    assert wrong == 0 and early > 300


def test_ppl_and_same_top_bars_use_their_own_statistic():
    n = 2 * WINDOW
    ppl = SequentialTest(parse_bar("ppl<=+3%"), windows=14)
    diff = np.full(n, 0.001) + np.random.default_rng(3).normal(0, 0.01, n)
    assert ppl.decide(np.zeros(n), np.zeros(n), diff) == "pass"
    top = SequentialTest(parse_bar("same_top>=0.9"), windows=14)
    same = (np.random.default_rng(4).random(n) < 0.5).astype(float)
    assert top.decide(np.zeros(n), same, np.zeros(n)) == "fail"


def test_too_few_positions_decide_nothing():
    test = SequentialTest(parse_bar("kld<=0.03"), windows=14)
    assert test.decide(np.full(100, 10.0), np.zeros(100), np.zeros(100)) is None


@pytest.mark.parametrize("mean", [0.003, 0.02, 0.3])
def test_replaying_resumed_windows_gives_the_looks_and_the_stop_of_a_fresh_run(mean):
    from types import SimpleNamespace

    from edgekit.bench.quality import ScoreState

    rng = np.random.default_rng(7)
    windows = 14
    kl = _kld(mean, windows * WINDOW, rng)
    zeros = np.zeros_like(kl)
    store = SimpleNamespace(per_window=WINDOW, next_lp=np.zeros(windows * WINDOW, np.float32))
    fresh = SequentialTest(parse_bar("kld<=0.03"), windows)
    stopped = _run(fresh, kl)
    for saved in (1, 3, windows):  # windows an earlier run scored before it was interrupted
        n = saved * WINDOW
        test = SequentialTest(parse_bar("kld<=0.03"), windows)
        st = test.replay(ScoreState(saved, kl[:n], zeros[:n], zeros[:n]), store)
        if stopped is not None and stopped <= saved:
            assert st.windows == stopped and test.decision == fresh.decision
        else:
            assert st.windows == saved and test.decision is None
        assert test.looks == fresh.looks[: len(test.looks)]
