"""The one summary of a sample edgekit reports: quantiles by linear interpolation between
order statistics (numpy's default, statistics.quantiles' "inclusive"), and the latency
summary (mean, p50, p90, p99) used for client-side and server-side latencies alike."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable

LATENCY_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(x) for x in values if x is not None and math.isfinite(x)]


def quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of ascending `ordered` (non-empty), linear between order statistics."""
    i = q * (len(ordered) - 1)
    lo, hi = math.floor(i), math.ceil(i)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (i - lo)


def quantile_summary(
    q: Callable[[float], float | None], mean: float | None, digits: int = 6
) -> dict[str, float | None]:
    """mean, p50, p90, p99 from a quantile function (a sample's or a histogram's), rounded."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {"mean": r(mean), **{k: r(q(p)) for k, p in LATENCY_QUANTILES}}


def latency_summary(values: Iterable[float | None], digits: int = 6) -> dict | None:
    """mean, p50, p90, p99 and n of the finite values; None when there are none."""
    v = sorted(finite(values))
    if not v:
        return None
    return {**quantile_summary(lambda p: quantile(v, p), statistics.fmean(v), digits), "n": len(v)}
