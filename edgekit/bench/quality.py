"""One quality metric for every format: a reference store and scoring against it.

The unquantized model is run once over the evaluation tokens in fixed windows; the second
half of each window is scored (the first half is context), as llama-perplexity does. For
each scored position the store keeps the reference's top-K token ids and log-probabilities,
the log of the remaining probability mass, and the log-probability of the actual next token.
Any candidate, on any runtime, is scored on exactly these tokens:

- KL divergence over the kept tokens plus one "rest" bucket. Merging the tail into one
  bucket can only lower a KL divergence (log-sum inequality), so this is a lower bound of
  the full-vocabulary KLD. A fixed top-64 missed 13-16 % of SmolLM2's KLD (its
  distributions are flat), so each position keeps as many tokens as hold 99.9 % of the
  reference's mass (at most K); the tests measure the remaining gap against full logits.
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
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import TopK  # the type runtimes return prompt log-probabilities in

ROW_CHUNK = 64


@dataclass(frozen=True)
class StoreKey:
    revision: str
    text_sha256: str
    window: int
    k: int  # the most tokens kept per position
    coverage: float = 0.999  # keep the reference's top tokens until they hold this much mass

    def slug(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"ref-{h}"


@dataclass
class ReferenceStore:
    """Per scored position: the reference's most likely tokens, as many as it takes to hold
    `coverage` of the probability mass (at least 16, at most K), stored ragged."""

    key: StoreKey
    tokens: Any  # numpy array: int32 (n_windows, window)
    offsets: Any  # numpy array: int64 (positions + 1): position i owns top_ids[offsets[i]:offsets[i+1]]
    top_ids: Any  # numpy array: int32 (sum of kept tokens,)
    # numpy array: float32 (sum of kept tokens,): reference log-probabilities, descending per position
    top_lp: Any
    rest_lp: Any  # numpy array: float32 (positions,): log of the mass outside the kept tokens
    next_lp: Any  # numpy array: float32 (positions,): log p(actual next token)
    meta: dict

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def per_window(self) -> int:
        return self.key.window // 2

    @property
    def positions(self) -> int:
        return int(len(self.rest_lp))

    def reference_ppl(self) -> float:
        return math.exp(-float(self.next_lp.mean()))

    def save(self, path: Path) -> None:
        import numpy as np

        from edgekit.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    tokens=self.tokens,
                    offsets=self.offsets,
                    top_ids=self.top_ids,
                    top_lp=self.top_lp,
                    rest_lp=self.rest_lp,
                    next_lp=self.next_lp,
                    meta=np.frombuffer(json.dumps(self.meta).encode(), np.uint8),
                )

    @classmethod
    def load(cls, path: Path, key: StoreKey) -> ReferenceStore:
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return cls(
                key, z["tokens"], z["offsets"], z["top_ids"], z["top_lp"], z["rest_lp"], z["next_lp"], meta
            )


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


MIN_KEPT = 16


def _scored_rows(window: int):
    """(r0, r1) blocks of logit rows: rows W/2-1 .. W-2 predict the second half of a window."""
    half = window // 2
    for r0 in range(half - 1, window - 1, ROW_CHUNK):
        yield r0, min(r0 + ROW_CHUNK, window - 1)


def build_reference(
    session, tokens: list[int], key: StoreKey, meta: dict, progress: Callable[[int, int], None] | None = None
) -> ReferenceStore:
    import numpy as np

    wins = windows_of(tokens, key.window)
    n = wins.shape[0]
    ids_parts: list[Any] = []
    lp_parts: list[Any] = []
    kept: list[Any] = []
    rest: list[Any] = []
    nxt: list[Any] = []
    t0 = time.perf_counter()
    for w in range(n):
        logits = session.logits(wins[w].tolist())
        for r0, r1 in _scored_rows(key.window):
            lp = log_softmax_rows(logits[r0:r1])
            k = min(key.k, lp.shape[1])
            idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
            vals = np.take_along_axis(lp, idx, -1)
            order = np.argsort(-vals, axis=-1)
            idx, vals = np.take_along_axis(idx, order, -1), np.take_along_axis(vals, order, -1)
            cum = np.cumsum(np.exp(vals.astype(np.float64)), axis=-1)
            keep = np.minimum(k, np.maximum(MIN_KEPT, (cum < key.coverage).sum(-1) + 1))
            for row in range(len(keep)):
                ids_parts.append(idx[row, : keep[row]])
                lp_parts.append(vals[row, : keep[row]])
            kept.append(keep)
            rest.append(np.log(np.clip(1.0 - cum[np.arange(len(keep)), keep - 1], 1e-12, 1.0)))
            nxt.append(np.take_along_axis(lp, wins[w, r0 + 1 : r1 + 1, None].astype(np.int64), -1)[:, 0])
        if progress:
            progress(w + 1, n)
    counts = np.concatenate(kept)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    meta = {
        **meta,
        "seconds": round(time.perf_counter() - t0, 2),
        "window": key.window,
        "k_max": key.k,
        "coverage": key.coverage,
        "kept_mean": round(float(counts.mean()), 1),
        "kept_median": int(np.median(counts)),
        "scored_per_window": key.window // 2,
        "windows": n,
    }
    return ReferenceStore(
        key,
        wins,
        offsets,
        np.concatenate(ids_parts).astype(np.int32),
        np.concatenate(lp_parts).astype(np.float32),
        np.concatenate(rest).astype(np.float32),
        np.concatenate(nxt).astype(np.float32),
        meta,
    )


def fmt_kld(x: float) -> str:
    """Four decimals where they carry information, two significant digits below 0.001."""
    return f"{x:.4f}" if x >= 1e-3 or x == 0 else f"{x:.1e}"


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


def score(
    session, store: ReferenceStore, progress: Callable[[int, int], None] | None = None
) -> QualityResult:
    import numpy as np

    kl_all, same_all, nll_all = [], [], []
    pos = 0
    t0 = time.perf_counter()
    for w in range(store.n_windows):
        toks = store.tokens[w]
        logits = session.logits(toks.tolist())
        for r0, r1 in _scored_rows(store.key.window):
            rows = r1 - r0
            lq = log_softmax_rows(logits[r0:r1])
            a, b = store.offsets[pos], store.offsets[pos + rows]
            counts = np.diff(store.offsets[pos : pos + rows + 1])
            row_of = np.repeat(np.arange(rows), counts)
            p_lp = store.top_lp[a:b].astype(np.float64)
            q_lp = lq[row_of, store.top_ids[a:b]].astype(np.float64)
            starts = (store.offsets[pos : pos + rows] - a).astype(np.int64)
            p = np.exp(p_lp)
            q_mass = np.add.reduceat(np.exp(q_lp), starts)
            q_rest = np.log(np.clip(1.0 - q_mass, 1e-12, 1.0))
            p_rest = store.rest_lp[pos : pos + rows].astype(np.float64)
            kl = np.add.reduceat(p * (p_lp - q_lp), starts) + np.exp(p_rest) * (p_rest - q_rest)
            kl_all.append(np.maximum(kl, 0.0))
            same_all.append(lq.argmax(-1) == store.top_ids[store.offsets[pos : pos + rows]])
            nll_all.append(-np.take_along_axis(lq, toks[r0 + 1 : r1 + 1, None].astype(np.int64), -1)[:, 0])
            pos += rows
        if progress:
            progress(w + 1, store.n_windows)
    seconds = time.perf_counter() - t0
    return _result(
        np.concatenate(kl_all), np.concatenate(same_all), np.concatenate(nll_all), store, seconds, store.key.k
    )


def _result(kl, same, nll, store: ReferenceStore, seconds: float, k: int) -> QualityResult:
    """The summary statistics of per-position KLD, same-top flags and candidate NLL."""
    import numpy as np

    kl = np.asarray(kl, np.float64)
    same = np.asarray(same, np.float64)
    nll = np.asarray(nll, np.float64)
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
        k=k,
        window=store.key.window,
    )


def score_sparse(
    prompt_logprobs: Callable[[list[int]], TopK],
    store: ReferenceStore,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    """Score a runtime that returns top-K log-probabilities per prompt position instead of
    logits (vLLM's prompt_logprobs): `prompt_logprobs(tokens)` returns a TopK
    (edgekit.runtimes.vllm_api.parse_prompt_logprobs makes one from vLLM's answer).

    KLD: the reference's kept tokens that the candidate also returned are buckets of their own,
    everything else one bucket whose masses are 1 minus the rest on each side -- a coarser
    partition than `score`'s, so a lower bound of it (log-sum inequality), tight when K covers
    the mass; the tests measure the gap. Same-top compares the candidate's rank-1 token;
    perplexity uses the exact log q of the next token."""
    import numpy as np

    kl_all, same_all, nll_all = [], [], []
    pos = 0
    k = 0
    t0 = time.perf_counter()
    half = store.key.window // 2
    for w in range(store.n_windows):
        toks = store.tokens[w].tolist()
        got = prompt_logprobs(toks)
        k = max(k, got.k)
        for r in range(half - 1, store.key.window - 1):
            a, b = int(store.offsets[pos]), int(store.offsets[pos + 1])
            ref_ids, ref_lp = store.top_ids[a:b], store.top_lp[a:b].astype(np.float64)
            q = dict(zip(got.ids[r], got.logprobs[r], strict=True))
            both = np.fromiter((t in q for t in ref_ids.tolist()), bool, len(ref_ids))
            p_in = ref_lp[both]
            q_in = np.array([q[t] for t in ref_ids[both].tolist()], np.float64)
            p_out = max(1.0 - float(np.exp(p_in).sum()), 1e-12)
            q_out = max(1.0 - float(np.exp(q_in).sum()), 1e-12)
            kl = float((np.exp(p_in) * (p_in - q_in)).sum()) + p_out * (math.log(p_out) - math.log(q_out))
            kl_all.append(max(kl, 0.0))
            same_all.append(bool(got.ids[r]) and got.ids[r][0] == int(ref_ids[0]))
            nll_all.append(-float(got.actual[r]))
            pos += 1
        if progress:
            progress(w + 1, store.n_windows)
    return _result(kl_all, same_all, nll_all, store, time.perf_counter() - t0, k)


def topk_from_logits(logits, tokens: list[int], k: int) -> TopK:
    """What a top-K runtime would return, from full logits (differential tests of score_sparse)."""
    import numpy as np

    lp = log_softmax_rows(logits)
    k = min(k, lp.shape[1])
    idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
    vals = np.take_along_axis(lp, idx, -1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    idx, vals = np.take_along_axis(idx, order, -1), np.take_along_axis(vals, order, -1)
    nxt = np.asarray(tokens[1:] + [tokens[-1]], np.int64)
    actual = np.take_along_axis(lp, nxt[:, None], -1)[:, 0]
    return TopK(idx.tolist(), vals.tolist(), actual.tolist(), k)
