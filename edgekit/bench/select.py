"""Selection: the smallest candidate that meets the quality bar.

Quality falls with size only within a chain: one format family at one setting (GGUF with an
importance matrix, GGUF without, GPTQ, AWQ, FP8, ...). Across families, or across imatrix
settings, size says little (without an importance matrix SmolLM2's Q5_K_S measures worse than
its Q4_K_M; a GPTQ checkpoint of one size can beat a larger GGUF). So the search bisects each
chain on its own and never lets a failure in one chain rule out a candidate of another:

- chains are visited in order of their smallest candidate; only the members smaller than the
  smallest passing candidate found so far are searched;
- within a chain: bisect for its smallest passing member as if one more, passing member sat
  above its largest (so the largest is measured only when everything below it missed); a
  member that misses the bar rules out every smaller one of its chain (the assumption, stated
  in the report for each candidate it leaves unbuilt).

That measures at most sum over chains of ceil(log2 (n + 1)) candidates instead of n (4 of the
10-type CPU ladder, where measuring the largest first took 5).
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


def search(
    ladder: Sequence,
    measure: Callable[[int], object],
    bar: Bar,
    chain_of: Callable[[int], str] | None = None,
    measured: dict[int, object] | None = None,
) -> Outcome:
    """Smallest passing index of `ladder` (sorted by size, smallest first), measuring as few
    as possible; `chain_of(i)` names candidate i's monotone chain (one chain when omitted).
    `measured` holds results already known (they are not measured again)."""
    measured = dict(measured or {})
    order: list[int] = []

    def passes(i: int) -> bool:
        if i not in measured:
            measured[i] = measure(i)
            order.append(i)
        return bar.passes(measured[i])

    chains: dict[str, list[int]] = {}
    for i in range(len(ladder)):
        chains.setdefault(chain_of(i) if chain_of else "", []).append(i)
    best: int | None = None
    for members in chains.values():  # in order of each chain's smallest candidate
        todo = [i for i in members if best is None or i < best]
        lo, hi = 0, len(todo)  # the answer is todo[lo..hi], hi == len(todo): nothing passes
        while lo < hi:
            mid = (lo + hi) // 2
            if passes(todo[mid]):
                hi = mid
            else:
                lo = mid + 1
        if hi < len(todo):
            best = todo[hi]
    return Outcome(best, measured, order)


def max_measurements(n: int | Sequence[int]) -> int:
    """The most candidates the search measures: n in one chain, or chains of these sizes."""
    sizes = [n] if isinstance(n, int) else list(n)
    return sum(math.ceil(math.log2(k + 1)) for k in sizes)
