"""Deciding a candidate against the quality bar before the whole evaluation text is scored.

The test (a group-sequential test with a Bonferroni bound over its looks):

- After each window w = 1..L of the reference store (L its windows), the bar's statistic is
  averaged over every position scored so far: the KLD (kld bar), the candidate's minus the
  reference's NLL (ppl bar: passes iff exp(mean) - 1 meets it, i.e. mean <= log1p(bar)), or
  same-top (same_top bar).
- Its standard error comes from batch means: consecutive positions are correlated (one hard
  passage raises the KLD of many), so positions are grouped in blocks of 16 in text order
  and the standard error is that of the block means (nearly independent).
- The candidate is decided at look w when mean +- t * se lies wholly on one side of the bar:
  below a KLD bar it passes, above it fails. Otherwise scoring goes on; after the last window
  the full mean decides, exactly as without the test.
- t is Student's t quantile for (blocks - 1) degrees of freedom at 1 - alpha / (2 L),
  alpha = 1e-3: across all L looks the chance that an early decision is the opposite of the
  one the true mean gives is at most alpha (Bonferroni over looks, two-sided), as far as the
  block means are normal. With one window of 255 positions (15 blocks) t is about 5.6, so a
  candidate decides after one or two windows when its KLD is several times under or over the
  bar, and runs to the end when it is close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from edgekit.bench.select import Bar

BLOCK = 16
ALPHA = 1e-3
MIN_BLOCKS = 8  # below this the block variance says too little to decide on


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile at probability p (> 0.5) for `dof` degrees of freedom: the normal
    quantile with Hill's (1970) expansion, accurate to a few 1e-3 from 8 degrees of freedom
    on, and conservative below that (it overstates t)."""
    z = NormalDist().inv_cdf(p)
    if dof <= 0:
        return math.inf
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


@dataclass
class Look:
    window: int
    positions: int
    mean: float
    se: float
    t: float
    decision: str | None  # "pass" | "fail" | None (undecided)


@dataclass
class SequentialTest:
    """Decides `bar` at the end of each of at most `windows` windows (see the module doc)."""

    bar: Bar
    windows: int
    alpha: float = ALPHA
    block: int = BLOCK
    looks: list[Look] = field(default_factory=list)

    def threshold(self) -> float:
        """The bar on the statistic's own scale (NLL difference for a ppl bar)."""
        if self.bar.metric == "ppl":
            return math.log1p(self.bar.value)
        return self.bar.value

    def statistic(self, kl, same, diff):
        return {"kld": kl, "ppl": diff, "same_top": same}[self.bar.metric]

    def decide(self, kl, same, diff) -> str | None:
        """ "pass" or "fail" when the positions scored so far settle the bar, else None."""
        import numpy as np

        x = np.asarray(self.statistic(kl, same, diff), np.float64)
        n_blocks = len(x) // self.block
        window = len(self.looks) + 1
        mean = float(x.mean()) if len(x) else math.nan
        if n_blocks < MIN_BLOCKS:
            self.looks.append(Look(window, len(x), mean, math.nan, math.inf, None))
            return None
        means = x[: n_blocks * self.block].reshape(n_blocks, self.block).mean(axis=1)
        se = float(means.std(ddof=1) / math.sqrt(n_blocks))
        t = t_quantile(1 - self.alpha / (2 * max(self.windows, 1)), n_blocks - 1)
        lo, hi = mean - t * se, mean + t * se
        bound = self.threshold()
        upper_bound = self.bar.metric != "same_top"  # kld and ppl: smaller passes
        decision: str | None = None
        if upper_bound:
            if hi < bound:
                decision = "pass"
            elif lo > bound:
                decision = "fail"
        else:
            if lo > bound:
                decision = "pass"
            elif hi < bound:
                decision = "fail"
        self.looks.append(Look(window, len(x), mean, se, t, decision))
        return decision

    def replay(self, state, store):
        """The looks of the windows a resumed quality.ScoreState holds, taken as if they were
        scored now: the state cut at the window that decides the bar, if one does (a fresh
        scoring would have stopped there), else whole."""
        import numpy as np

        per = store.per_window
        ref_nll = -store.next_lp.reshape(-1).astype(np.float64)
        for w in range(1, state.windows + 1):
            n = w * per
            if self.decide(state.kl[:n], state.same[:n], state.nll[:n] - ref_nll[:n]) is not None:
                return type(state)(w, state.kl[:n], state.same[:n], state.nll[:n])
        return state

    def stop(self, kl, same, diff) -> bool:
        """The `stop` callback of quality.score: True once the bar is decided."""
        return self.decide(kl, same, diff) is not None

    @property
    def decision(self) -> str | None:
        return self.looks[-1].decision if self.looks else None

    def to_dict(self) -> dict:
        last = self.looks[-1] if self.looks else None
        return {
            "decided": self.decision,
            "after_windows": last.window if last else 0,
            "of_windows": self.windows,
            "mean": last.mean if last else None,
            "se": last.se if last and math.isfinite(last.se) else None,
            "t": round(last.t, 3) if last and math.isfinite(last.t) else None,
            "alpha": self.alpha,
            "block": self.block,
        }


METHOD = (
    "sequential: after each window the running mean of the bar's statistic (KLD; NLL difference for a "
    "ppl bar; same-top) and its batch-means standard error (blocks of 16 positions) give mean +- t se, "
    "t = Student's t at 1 - alpha/(2 L), alpha = 1e-3, L = the windows (Bonferroni over the looks); a "
    "candidate is decided once that interval lies on one side of the bar, else after the last window by "
    "its mean; the pick is always evaluated on every window (--full: every candidate is)"
)
