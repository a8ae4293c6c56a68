"""One quality metric for every format: a reference store and scoring against it.

The unquantized model is run once over the evaluation tokens in fixed windows; the second
half of each window is scored (the first half is context), as llama-perplexity does. For
each scored position the store keeps the reference's top-K token ids and log-probabilities,
the log of the remaining probability mass, and the log-probability of the actual next token.
Any candidate, on any runtime, is scored on exactly these tokens:

- KL divergence over K entries plus one "rest" bucket. Merging the tail into one bucket can
  only lower a KL divergence (log-sum inequality), so this is a lower bound of the true
  full-vocabulary KLD; how close it is is measured in the tests and reported.
- same-top-token rate, perplexity and its ratio to the reference's (paired), each with a
  standard error.

Logits are turned into log-probabilities in float32, a few rows at a time: a 512-token
window of a 151,936-token vocabulary is 311 MB in float32 already.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

ROW_CHUNK = 64


@dataclass(frozen=True)
class StoreKey:
    revision: str
    text_sha256: str
    window: int
    k: int

    def slug(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"ref-{h}"


@dataclass
class ReferenceStore:
    key: StoreKey
    tokens: object  # int32 (n_windows, window)
    top_ids: object  # int32 (n_windows, window/2, K)
    top_lp: object  # float32 (n_windows, window/2, K)
    rest_lp: object  # float32 (n_windows, window/2): log of the mass outside the top K
    next_lp: object  # float32 (n_windows, window/2): log p(actual next token)
    meta: dict

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def positions(self) -> int:
        return int(self.top_ids.shape[0] * self.top_ids.shape[1])

    def reference_ppl(self) -> float:
        return math.exp(-float(self.next_lp.mean()))

    def save(self, path: Path) -> None:
        import numpy as np

        from edgekit.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, tokens=self.tokens, top_ids=self.top_ids, top_lp=self.top_lp, rest_lp=self.rest_lp,
                         next_lp=self.next_lp, meta=np.frombuffer(json.dumps(self.meta).encode(), np.uint8))  # fmt: skip

    @classmethod
    def load(cls, path: Path, key: StoreKey) -> ReferenceStore:
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return cls(key, z["tokens"], z["top_ids"], z["top_lp"], z["rest_lp"], z["next_lp"], meta)


def windows_of(tokens: list[int], window: int):
    import numpy as np

    n = len(tokens) // window
    if n < 1:
        raise EdgekitError(f"the evaluation text has {len(tokens)} tokens, fewer than one window of {window}")
    return np.asarray(tokens[: n * window], dtype=np.int32).reshape(n, window)


def log_softmax_rows(logits):
    """float32 log-softmax of a (rows, vocab) block."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    lse = np.log(np.exp(y).sum(axis=-1, keepdims=True, dtype=np.float32))
    return y - lse


def build_reference(session, tokens: list[int], key: StoreKey, meta: dict,
                    progress: Callable[[int, int], None] | None = None) -> ReferenceStore:  # fmt: skip
    import numpy as np

    wins = windows_of(tokens, key.window)
    half = key.window // 2
    n, k = wins.shape[0], key.k
    top_ids = np.zeros((n, half, k), np.int32)
    top_lp = np.zeros((n, half, k), np.float32)
    rest_lp = np.zeros((n, half), np.float32)
    next_lp = np.zeros((n, half), np.float32)
    t0 = time.perf_counter()
    for w in range(n):
        logits = session.logits(wins[w].tolist())
        # logits at position i predict token i + 1: positions W/2-1 .. W-2 score the second half
        for r0 in range(half - 1, key.window - 1, ROW_CHUNK):
            r1 = min(r0 + ROW_CHUNK, key.window - 1)
            lp = log_softmax_rows(logits[r0:r1])
            idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
            vals = np.take_along_axis(lp, idx, -1)
            order = np.argsort(-vals, axis=-1)
            idx, vals = np.take_along_axis(idx, order, -1), np.take_along_axis(vals, order, -1)
            s = slice(r0 - (half - 1), r1 - (half - 1))
            top_ids[w, s], top_lp[w, s] = idx, vals
            rest_lp[w, s] = _log1mexp_sum(vals)
            next_lp[w, s] = np.take_along_axis(lp, wins[w, r0 + 1 : r1 + 1, None].astype(np.int64), -1)[:, 0]
        if progress:
            progress(w + 1, n)
    meta = {**meta, "seconds": round(time.perf_counter() - t0, 2), "window": key.window, "k": key.k,
            "scored_per_window": half, "windows": n}  # fmt: skip
    return ReferenceStore(key, wins, top_ids, top_lp, rest_lp, next_lp, meta)


def _log1mexp_sum(top_lp):
    """log(1 - sum(exp(top_lp))) per row, clamped so a rounding-error tail stays finite."""
    import numpy as np

    mass = np.exp(top_lp.astype(np.float64)).sum(-1)
    return np.log(np.clip(1.0 - mass, 1e-12, 1.0)).astype(np.float32)


@dataclass
class QualityResult:
    positions: int
    kld_mean: float
    kld_stderr: float
    kld_p99: float
    kld_max: float
    same_top: float
    same_top_stderr: float
    ppl: float
    ppl_stderr: float
    ppl_ref: float
    ppl_ratio: float
    ppl_ratio_stderr: float
    tokens_per_s: float
    k: int
    window: int

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def score(session, store: ReferenceStore, progress: Callable[[int, int], None] | None = None) -> QualityResult:
    import numpy as np

    half = store.key.window // 2
    kl_all, same_all, nll_all = [], [], []
    t0 = time.perf_counter()
    for w in range(store.n_windows):
        toks = store.tokens[w]
        logits = session.logits(toks.tolist())
        for r0 in range(half - 1, store.key.window - 1, ROW_CHUNK):
            r1 = min(r0 + ROW_CHUNK, store.key.window - 1)
            s = slice(r0 - (half - 1), r1 - (half - 1))
            lq = log_softmax_rows(logits[r0:r1])
            p_ids, p_lp, p_rest = store.top_ids[w, s], store.top_lp[w, s], store.rest_lp[w, s]
            q_top = np.take_along_axis(lq, p_ids.astype(np.int64), -1)
            q_rest = _log1mexp_sum(q_top)
            p = np.exp(p_lp.astype(np.float64))
            kl = (p * (p_lp - q_top)).sum(-1) + np.exp(p_rest.astype(np.float64)) * (p_rest - q_rest)
            kl_all.append(np.maximum(kl, 0.0))
            same_all.append(lq.argmax(-1) == p_ids[:, 0])
            nll_all.append(-np.take_along_axis(lq, toks[r0 + 1 : r1 + 1, None].astype(np.int64), -1)[:, 0])
        if progress:
            progress(w + 1, store.n_windows)
    seconds = time.perf_counter() - t0
    kl = np.concatenate(kl_all)
    same = np.concatenate(same_all).astype(np.float64)
    nll = np.concatenate(nll_all).astype(np.float64)
    ref_nll = -store.next_lp.reshape(-1).astype(np.float64)
    n = len(kl)
    ppl = math.exp(nll.mean())
    diff = nll - ref_nll
    ratio = math.exp(diff.mean())
    return QualityResult(
        positions=n,
        kld_mean=float(kl.mean()),
        kld_stderr=float(kl.std(ddof=1) / math.sqrt(n)),
        kld_p99=float(np.percentile(kl, 99)),
        kld_max=float(kl.max()),
        same_top=float(same.mean()),
        same_top_stderr=float(math.sqrt(max(same.mean() * (1 - same.mean()), 0.0) / n)),
        ppl=ppl,
        ppl_stderr=float(ppl * nll.std(ddof=1) / math.sqrt(n)),
        ppl_ref=store.reference_ppl(),
        ppl_ratio=ratio,
        ppl_ratio_stderr=float(ratio * diff.std(ddof=1) / math.sqrt(n)),
        tokens_per_s=n / seconds if seconds > 0 else float("nan"),
        k=store.key.k,
        window=store.key.window,
    )
