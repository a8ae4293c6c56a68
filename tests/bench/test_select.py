import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.bench.quality import QualityResult
from edgekit.bench.select import max_measurements, parse_bar, search
from edgekit.errors import EdgekitError


def q(kld=0.0, same_top=1.0, ppl_ratio=1.0):
    return QualityResult(
        1000, kld, 0.0, kld, kld, same_top, 0.0, 10.0, 0.1, 10.0, ppl_ratio, 0.0, 1.0, 64, 512
    )


@pytest.mark.parametrize(
    "text,metric,value",
    [
        ("kld<=0.03", "kld", 0.03),
        ("KLD < 0.1", "kld", 0.1),
        ("ppl<=+3%", "ppl", 0.03),
        ("ppl<=0.05", "ppl", 0.05),
        ("same_top>=0.9", "same_top", 0.9),
        ("same-top>=90%", "same_top", 0.9),
    ],
)
def test_bar_parsing(text, metric, value):
    b = parse_bar(text)
    assert b.metric == metric and b.value == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    ["", "kld", "kld>=0.03", "ppl>=3%", "same_top<=0.9", "same_top>=150%", "foo<=1", "kld<=-1", "kld<=3%"],
)
def test_malformed_bars(text):
    with pytest.raises(EdgekitError):
        parse_bar(text)


def test_bar_semantics():
    assert parse_bar("kld<=0.03").passes(q(kld=0.03)) and not parse_bar("kld<0.03").passes(q(kld=0.03))
    assert parse_bar("ppl<=+3%").passes(q(ppl_ratio=1.029)) and not parse_bar("ppl<=+3%").passes(
        q(ppl_ratio=1.031)
    )
    assert parse_bar("same_top>=0.9").passes(q(same_top=0.95))


@pytest.mark.parametrize("n", range(1, 21))
def test_search_is_logarithmic_and_right_on_monotone_ladders(n):
    # quality falls with size: index i has KLD 1 / (i + 1); try every possible threshold
    kld = [1.0 / (i + 1) for i in range(n)]
    for bar_value in [k + 1e-9 for k in kld] + [0.0]:
        bar = parse_bar(f"kld<={bar_value:.12f}")
        built = []

        def measure(i, built=built):
            built.append(i)
            return q(kld=kld[i])

        out = search(list(range(n)), measure, bar)
        expected = next((i for i in range(n) if kld[i] <= bar.value), None)
        assert out.pick == expected
        assert len(built) == len(set(built)) <= math.ceil(math.log2(n + 1))
        assert len(built) <= max_measurements(n)


def _brute_force(kld, bar):
    return next((i for i in range(len(kld)) if kld[i] <= bar.value), None)


def test_a_failure_in_one_chain_never_skips_a_smaller_pass_in_another():
    # sizes ascending; GGUF without imatrix is bad at every size, GPTQ (a different chain) is good
    # and small: bisection over one ladder would see the largest GGUF fail below it and stop
    chains = ["gguf", "gptq", "gguf", "gguf", "gguf", "gguf"]
    kld = [0.50, 0.01, 0.40, 0.30, 0.20, 0.02]
    bar = parse_bar("kld<=0.03")
    out = search(list(range(6)), lambda i: q(kld=kld[i]), bar, chain_of=lambda i: chains[i])
    assert out.pick == 1
    one_ladder = search(list(range(6)), lambda i: q(kld=kld[i]), bar)
    assert one_ladder.pick == 5  # what a single bisection over sizes gets wrong


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.floats(0.001, 1.0)), min_size=1, max_size=14),
    st.floats(0.0, 1.0),
)
def test_chain_search_finds_the_smallest_pass_when_each_chain_is_monotone(rows, bar_value):
    # each chain's KLD falls with size; across chains anything goes (the ladder is sorted by size)
    chains = [c for c, _ in rows]
    by_chain: dict[str, list[float]] = {}
    for c, k in rows:
        by_chain.setdefault(c, []).append(k)
    falling = {c: sorted(v, reverse=True) for c, v in by_chain.items()}
    taken = dict.fromkeys(falling, 0)
    kld = []
    for c in chains:
        kld.append(falling[c][taken[c]])
        taken[c] += 1
    bar = parse_bar(f"kld<={bar_value:.6f}")
    built: list[int] = []

    def measure(i):
        built.append(i)
        return q(kld=kld[i])

    out = search(list(range(len(kld))), measure, bar, chain_of=lambda i: chains[i])
    assert out.pick == _brute_force(kld, bar)
    assert len(built) == len(set(built)) <= max_measurements([len(v) for v in by_chain.values()])


def test_known_results_are_not_measured_again():
    kld = [0.5, 0.2, 0.01, 0.001]
    bar = parse_bar("kld<=0.03")
    built: list[int] = []
    out = search(list(range(4)), lambda i: built.append(i) or q(kld=kld[i]), bar, measured={3: q(kld=0.001)})
    assert out.pick == 2 and 3 not in built and 3 in out.measured
