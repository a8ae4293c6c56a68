"""Selection: the smallest candidate that meets the quality bar.

Quality falls almost monotonically with size, so the ladder (candidates sorted by size) is
searched by bisection: check the largest, then halve the interval that must contain the
smallest passing candidate. That measures at most ceil(log2 n) + 1 candidates instead of n.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgekit.errors import EdgekitError

_BAR = re.compile(
    r"^\s*(kld|ppl|same[_-]?top)\s*(<=|>=|<|>)\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class Bar:
    metric: str  # kld | ppl | same_top
    op: str
    value: float  # kld: nats; ppl: relative increase (0.03 = +3 %); same_top: a rate in [0, 1]
    text: str

    def passes(self, q) -> bool:
        x = self.observed(q)
        return {"<=": x <= self.value, "<": x < self.value, ">=": x >= self.value, ">": x > self.value}[
            self.op
        ]

    def observed(self, q) -> float:
        if self.metric == "kld":
            return q.kld_mean
        if self.metric == "ppl":
            return q.ppl_ratio - 1.0
        return q.same_top

    def to_dict(self) -> dict:
        return {"text": self.text, "metric": self.metric, "op": self.op, "value": self.value}


def parse_bar(text: str) -> Bar:
    """`kld<=0.03`, `ppl<=+3%`, `same_top>=0.9` or `same-top>=90%`."""
    m = _BAR.match(text or "")
    if not m:
        raise EdgekitError(
            f"malformed quality bar {text!r}", "use e.g. 'kld<=0.03', 'ppl<=+3%' or 'same_top>=0.9'"
        )
    metric, op, num, pct = m.group(1).lower().replace("-", "_"), m.group(2), float(m.group(3)), m.group(4)
    if metric == "sametop":
        metric = "same_top"
    if metric == "kld":
        if pct or op not in ("<=", "<") or num < 0:
            raise EdgekitError(
                f"quality bar {text!r}: KLD is a non-negative number with an upper bound (kld<=0.03)"
            )
        value = num
    elif metric == "ppl":
        if op not in ("<=", "<"):
            raise EdgekitError(f"quality bar {text!r}: perplexity takes an upper bound (ppl<=+3%)")
        value = num / 100 if pct else num
    else:
        if op not in (">=", ">"):
            raise EdgekitError(f"quality bar {text!r}: same-top takes a lower bound (same_top>=0.9)")
        value = num / 100 if pct else num
        if not 0 <= value <= 1:
            raise EdgekitError(f"quality bar {text!r}: a rate between 0 and 1 (or 0-100%)")
    return Bar(metric, op, value, text.strip())


@dataclass
class Outcome:
    pick: int | None  # index into the ladder
    measured: dict[int, object]  # index -> quality result
    order: list[int]  # the order candidates were measured in


def search(ladder: Sequence, measure: Callable[[int], object], bar: Bar) -> Outcome:
    """Smallest passing index of `ladder` (sorted by size), measuring as few as possible."""
    measured: dict[int, object] = {}
    order: list[int] = []

    def passes(i: int) -> bool:
        if i not in measured:
            measured[i] = measure(i)
            order.append(i)
        return bar.passes(measured[i])

    n = len(ladder)
    if n == 0:
        return Outcome(None, measured, order)
    if not passes(n - 1):
        return Outcome(None, measured, order)
    lo, hi = 0, n - 1  # hi passes; the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return Outcome(hi, measured, order)


def max_measurements(n: int) -> int:
    return math.ceil(math.log2(n)) + 1 if n > 1 else n
