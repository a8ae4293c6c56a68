import math

import pytest

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
        assert len(built) == len(set(built)) <= math.ceil(math.log2(n)) + 2
        assert len(built) <= max_measurements(n)
