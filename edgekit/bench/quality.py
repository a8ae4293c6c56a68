"""One quality metric for every format: a reference store and scoring against it.

The store scores exactly llama-perplexity's positions (llama.cpp tools/perplexity): the whole
text is tokenized once with the vocabulary's special tokens (a BOS in front when the vocabulary
adds one), cut into `tokens // window` windows, the first token of every window replaced by
BOS when the vocabulary adds one, and in each window the logits of rows `window/2 ..
window-2` scored against the tokens after them (255 positions of a 512-token window; the
first half is context). For each scored position the store keeps the reference's most likely
token ids and log-probabilities, the log of the remaining probability mass, and the
log-probability of the actual next token. Any candidate, on any runtime, is scored on
exactly these tokens:

- KL divergence over the kept tokens plus one "rest" bucket. Merging the tail into one
  bucket can only lower a KL divergence (log-sum inequality), so this is a lower bound of
  the full-vocabulary KLD. A fixed top-64 missed 13-16 % of SmolLM2's KLD (its
  distributions are flat), so each position keeps as many tokens as hold `coverage` of the
  reference's mass (at most K); the tests measure the remaining gap against full logits and
  against llama-perplexity --kl-divergence.
- same-top-token rate, perplexity and its ratio to the reference's (paired), each with a
  standard error.

A session that can compute the logits of the scored rows alone (`scored_logits(tokens,
first)`, llama.cpp's per-token output flags) is asked for those; any other for all rows
(`logits(tokens)`). Logits are reduced in float32 blocks of rows, vectorised: a 512-token
window of a 151,936-token vocabulary is 311 MB in float32 already.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import TopK  # the type runtimes return prompt log-probabilities in

ROW_CHUNK = 64
# 2: llama-perplexity's positions (BOS rule, rows window/2 .. window-2); 1 (no field):
# rows window/2-1 .. window-2 of windows without BOS
STORE_VERSION = 2


@dataclass(frozen=True)
class StoreKey:
    revision: str
    text_sha256: str
    window: int
    k: int  # the most tokens kept per position
    coverage: float = 0.999  # keep the reference's top tokens until they hold this much mass
    version: int = STORE_VERSION  # what positions and tokens a store holds (part of the slug)

    def slug(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"ref-{h}"


def first_scored(window: int) -> int:
    """The first scored logit row of a window (llama-perplexity's `first = n_ctx/2`)."""
    return window // 2


def scored_per_window(window: int) -> int:
    """Rows first .. window-2 predict tokens first+1 .. window-1."""
    return window - 1 - first_scored(window)


@dataclass
class ReferenceStore:
    """Per scored position: the reference's most likely tokens, as many as it takes to hold
    `coverage` of the probability mass (at least 16, at most K), stored ragged."""

    key: StoreKey
    tokens: Any  # numpy array: int32 (n_windows, window), as every runtime is fed them
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
        return scored_per_window(self.key.window)

    @property
    def first(self) -> int:
        return first_scored(self.key.window)

    @property
    def positions(self) -> int:
        return int(len(self.rest_lp))

    def reference_ppl(self) -> float:
        return math.exp(-float(self.next_lp.astype("float64").mean()))

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


def windows_of(tokens, window: int, bos: int | None = None):
    """llama-perplexity's chunks: `len(tokens) // window` windows (the tail is dropped), the
    first token of each replaced by `bos` when the vocabulary adds one."""
    import numpy as np

    n = len(tokens) // window
    if n < 1:
        raise EdgekitError(f"the evaluation text has {len(tokens)} tokens, fewer than one window of {window}")
    wins = np.array(tokens[: n * window], dtype=np.int32).reshape(n, window)
    if bos is not None:
        wins[:, 0] = bos
    return wins


def log_softmax_rows(logits):
    """float32 log-softmax of a (rows, vocab) block."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    lse = np.log(np.exp(y).sum(axis=-1, keepdims=True, dtype=np.float32))
    return y - lse


def _lse_argmax(x, buf):
    """Per row of a float32 (rows, vocab) block: log-sum-exp (float64) and argmax, through
    one scratch buffer of the block's shape."""
    import numpy as np

    top = x.argmax(axis=-1)
    m = x[np.arange(len(x)), top]
    np.subtract(x, m[:, None], out=buf)
    np.exp(buf, out=buf)
    return m.astype(np.float64) + np.log(buf.sum(axis=-1, dtype=np.float64)), top


def scored_logit_rows(session, tokens, first: int):
    """The logits of rows first .. len(tokens)-2 (float32): through the session's
    `scored_logits` when it has one (only those rows are computed), else its `logits`."""
    import numpy as np

    fn = getattr(session, "scored_logits", None)
    if callable(fn):
        return fn(tokens, first)
    return np.asarray(session.logits(np.asarray(tokens).tolist()), dtype=np.float32)[first:-1]


MIN_KEPT = 16
FIRST_K = 256  # tokens partitioned first; rows whose mass they do not hold take 4x more, up to K


def _top_tokens(lp, k_max: int, coverage: float):
    """Per row of float32 log-probabilities: the descending top tokens holding `coverage` of
    the mass (at least MIN_KEPT, at most k_max), as (counts, ids, log-probs, rest) with ids
    and log-probs concatenated row after row; rest is log(1 - kept mass). Rows are
    partitioned FIRST_K tokens deep first; those that need more go again 4x deeper."""
    import numpy as np

    rows, vocab = lp.shape
    k_max = min(k_max, vocab)
    counts = np.zeros(rows, np.int64)
    kept_mass = np.zeros(rows, np.float64)
    rounds = []  # (rows, their kept ids and log-probs concatenated)
    todo = np.arange(rows)
    k = min(FIRST_K, k_max)
    while len(todo):
        block = lp[todo]
        idx = np.argpartition(-block, k - 1, axis=-1)[:, :k]
        vals = np.take_along_axis(block, idx, -1)
        order = np.argsort(-vals, axis=-1, kind="stable")
        idx, vals = np.take_along_axis(idx, order, -1), np.take_along_axis(vals, order, -1)
        cum = np.cumsum(np.exp(vals.astype(np.float64)), axis=-1)
        need = (cum < coverage).sum(-1) + 1  # tokens it takes to reach the coverage
        done = (need <= k) | (k >= k_max)
        keep = np.minimum(k, np.maximum(MIN_KEPT, need))[done]
        counts[todo[done]] = keep
        kept_mass[todo[done]] = cum[done][np.arange(len(keep)), keep - 1]
        mask = np.arange(k)[None, :] < keep[:, None]
        rounds.append((todo[done], idx[done][mask], vals[done][mask]))
        todo = todo[~done]
        k = min(4 * k, k_max)
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    ids = np.empty(offsets[-1], np.int32)
    lps = np.empty(offsets[-1], np.float32)
    for done_rows, r_ids, r_lp in rounds:  # a round or two: scatter each into row order
        n = counts[done_rows]
        start_in_round = np.repeat(np.cumsum(n) - n, n)
        dest = np.repeat(offsets[done_rows], n) + np.arange(len(r_ids)) - start_in_round
        ids[dest], lps[dest] = r_ids, r_lp
    rest = np.log(np.clip(1.0 - kept_mass, 1e-12, 1.0))
    return counts, ids, lps, rest


def build_reference(
    session,
    tokens: list[int],
    key: StoreKey,
    meta: dict,
    progress: Callable[[int, int], None] | None = None,
    bos: int | None = None,
) -> ReferenceStore:
    """The store of `tokens` (the whole text, tokenized as llama-perplexity does) through the
    reference session; `bos` replaces the first token of every window (the vocabulary's BOS
    when it adds one)."""
    import numpy as np

    wins = windows_of(tokens, key.window, bos)
    n = wins.shape[0]
    first = first_scored(key.window)
    per = scored_per_window(key.window)
    kept: list[Any] = []
    ids_parts: list[Any] = []
    lp_parts: list[Any] = []
    rest = np.empty(n * per, np.float32)
    nxt = np.empty(n * per, np.float32)
    t0 = time.perf_counter()
    pos = 0
    for w in range(n):
        logits = scored_logit_rows(session, wins[w], first)
        for r0 in range(0, per, ROW_CHUNK):
            r1 = min(r0 + ROW_CHUNK, per)
            lp = log_softmax_rows(logits[r0:r1])
            counts, ids, lps, rest_lp = _top_tokens(lp, key.k, key.coverage)
            kept.append(counts)
            ids_parts.append(ids)
            lp_parts.append(lps)
            rest[pos : pos + r1 - r0] = rest_lp
            targets = wins[w, first + 1 + r0 : first + 1 + r1].astype(np.int64)
            nxt[pos : pos + r1 - r0] = lp[np.arange(r1 - r0), targets]
            pos += r1 - r0
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
        "scored_per_window": per,
        "first_scored_row": first,
        "bos": bos,
        "windows": n,
        "store_version": key.version,
    }
    return ReferenceStore(
        key,
        wins,
        offsets,
        np.concatenate(ids_parts).astype(np.int32),
        np.concatenate(lp_parts).astype(np.float32),
        rest,
        nxt,
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
    windows: int = 0  # windows scored (0: a result cached before the field)
    complete: bool = True  # False: `stop` ended the scoring before the last window

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> QualityResult:
        """A result from to_dict's JSON (one written before a field existed takes its default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# stop(kl, same, nll_diff) after each window, on every position scored so far (float64:
# per-position KLD, same-top 0/1, candidate NLL minus reference NLL): True ends the scoring
Stop = Callable[[Any, Any, Any], bool]


@dataclass
class ScoreState:
    """What a scoring has measured so far: per-position KLD, same-top and candidate NLL
    (float64) of its first `windows` windows. A scoring given one goes on from there (its
    windows are not scored again) and leaves it holding every window scored; `on_window`
    sees it after each window (to keep it on disk: an interrupted run resumes mid-candidate).
    The values do not depend on a bar, so any later run, whatever its bar, can go on from it."""

    windows: int = 0
    kl: Any = None
    same: Any = None
    nll: Any = None

    def save(self, path: Path) -> None:
        import numpy as np

        from edgekit.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, windows=np.int64(self.windows), kl=self.kl, same=self.same, nll=self.nll)

    @classmethod
    def load(cls, path: Path, store: ReferenceStore) -> ScoreState:
        """The state at `path`, checked against the store it was scored on (window count and
        per-window positions): a state that does not fit raises EdgekitError."""
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            st = cls(int(z["windows"]), z["kl"], z["same"], z["nll"])
        n = st.windows * store.per_window
        if not 0 <= st.windows <= store.n_windows or any(
            a.dtype != np.float64 or a.shape != (n,) or not np.isfinite(a).all()
            for a in (st.kl, st.same, st.nll)
        ):
            raise EdgekitError(f"{path}: not a partial score of this store")
        return st

    def _into(self, kl, same, nll) -> int:
        """Copy the scored positions into the scoring's arrays; the position to go on from."""
        n = 0 if self.kl is None else len(self.kl)
        if n:
            kl[:n], same[:n], nll[:n] = self.kl, self.same, self.nll
        return n

    def _keep(self, kl, same, nll, windows: int, pos: int) -> None:
        self.windows, self.kl, self.same, self.nll = (
            windows,
            kl[:pos].copy(),
            same[:pos].copy(),
            nll[:pos].copy(),
        )


def score(
    session,
    store: ReferenceStore,
    progress: Callable[[int, int], None] | None = None,
    stop: Stop | None = None,
    state: ScoreState | None = None,
    on_window: Callable[[ScoreState], None] | None = None,
) -> QualityResult:
    """Score a session that gives logits (`scored_logits` or `logits`) against the store.
    After each window `stop`, when given, sees every position so far and may end the scoring
    there: the result is then over the windows scored (`complete` False). `state` (ScoreState)
    holds windows already scored: scoring goes on after them and leaves every window in it."""
    import numpy as np

    first = store.first
    per = store.per_window
    total = store.n_windows * per
    kl = np.zeros(total, np.float64)
    same = np.zeros(total, np.float64)
    nll = np.zeros(total, np.float64)
    ref_nll = -store.next_lp.astype(np.float64)
    offsets, top_ids = store.offsets, store.top_ids
    top_lp = store.top_lp.astype(np.float64)
    p_all = np.exp(top_lp)
    p_rest = store.rest_lp.astype(np.float64)
    buf = None
    state = state if state is not None else ScoreState()
    pos = start = state._into(kl, same, nll)
    windows = state.windows
    t0 = time.perf_counter()
    for w in range(windows, store.n_windows):
        toks = store.tokens[w]
        logits = scored_logit_rows(session, toks, first)
        if logits.shape[0] != per:
            raise EdgekitError(f"the session gave {logits.shape[0]} scored rows for a window, not {per}")
        for r0 in range(0, per, ROW_CHUNK):
            r1 = min(r0 + ROW_CHUNK, per)
            rows = r1 - r0
            x = logits[r0:r1]
            if buf is None or buf.shape[1] != x.shape[1]:
                buf = np.empty((ROW_CHUNK, x.shape[1]), np.float32)
            lse, top = _lse_argmax(x, buf[:rows])
            sl = slice(pos, pos + rows)
            a, b = offsets[pos], offsets[pos + rows]
            counts = np.diff(offsets[pos : pos + rows + 1])
            row_of = np.repeat(np.arange(rows), counts)
            q_lp = x[row_of, top_ids[a:b]].astype(np.float64) - lse[row_of]
            starts = offsets[pos : pos + rows] - a
            q_mass = np.add.reduceat(np.exp(q_lp), starts)
            q_rest = np.log(np.clip(1.0 - q_mass, 1e-12, 1.0))
            kl_rows = np.add.reduceat(p_all[a:b] * (top_lp[a:b] - q_lp), starts)
            kl_rows += np.exp(p_rest[sl]) * (p_rest[sl] - q_rest)
            kl[sl] = np.maximum(kl_rows, 0.0)
            same[sl] = top == top_ids[offsets[pos : pos + rows]]
            targets = toks[first + 1 + r0 : first + 1 + r1].astype(np.int64)
            nll[sl] = lse - x[np.arange(rows), targets]
            pos += rows
        windows += 1
        state._keep(kl, same, nll, windows, pos)
        if on_window:
            on_window(state)
        if progress:
            progress(w + 1, store.n_windows)
        if stop is not None and _stopped(stop, kl, same, nll, ref_nll, pos):
            break
    seconds = time.perf_counter() - t0
    return _result(kl[:pos], same[:pos], nll[:pos], store, seconds, store.key.k, windows, pos - start)


def _stopped(stop: Stop, kl, same, nll, ref_nll, n: int) -> bool:
    views = [kl[:n], same[:n]]
    for v in views:
        v.flags.writeable = False
    diff = nll[:n] - ref_nll[:n]
    return bool(stop(views[0], views[1], diff))


def _result(
    kl, same, nll, store: ReferenceStore, seconds: float, k: int, windows: int, scored: int | None = None
) -> QualityResult:
    """The summary statistics of per-position KLD, same-top flags and candidate NLL over the
    first len(kl) positions of the store (all of them unless a stop ended the scoring);
    `scored` of them were scored in these `seconds` (the rest resumed from a ScoreState)."""
    import numpy as np

    kl = np.asarray(kl, np.float64)
    same = np.asarray(same, np.float64)
    nll = np.asarray(nll, np.float64)
    n = len(kl)
    ref_nll = -store.next_lp.reshape(-1)[:n].astype(np.float64)
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
        ppl_ref=math.exp(ref_nll.mean()),
        ppl_ratio=ratio,
        ppl_ratio_stderr=float(ratio * diff.std(ddof=1) / math.sqrt(n)),
        # positions per second scored in this call; 0 when every window was resumed
        tokens_per_s=(n if scored is None else scored) / seconds if seconds > 0 and scored != 0 else 0.0,
        k=k,
        window=store.key.window,
        windows=windows,
        complete=windows == store.n_windows,
    )


def score_state(state: ScoreState, store: ReferenceStore) -> QualityResult:
    """The result of the windows a ScoreState holds (no model run)."""
    return _result(state.kl, state.same, state.nll, store, 0.0, store.key.k, state.windows, 0)


def score_sparse(
    prompt_logprobs: Callable[[list[int]], TopK],
    store: ReferenceStore,
    progress: Callable[[int, int], None] | None = None,
    stop: Stop | None = None,
    state: ScoreState | None = None,
    on_window: Callable[[ScoreState], None] | None = None,
) -> QualityResult:
    """Score a runtime that returns top-K log-probabilities per prompt position instead of
    logits (vLLM's prompt_logprobs): `prompt_logprobs(tokens)` returns a TopK
    (edgekit.runtimes.vllm_api.parse_prompt_logprobs makes one from vLLM's answer).

    KLD: the reference's kept tokens that the candidate also returned are buckets of their own,
    everything else one bucket whose masses are 1 minus the rest on each side -- a coarser
    partition than `score`'s, so a lower bound of it (log-sum inequality), tight when K covers
    the mass; the tests measure the gap. Same-top compares the candidate's rank-1 token;
    perplexity uses the exact log q of the next token. `stop`, `state` and `on_window` as in
    `score`."""
    import numpy as np

    first, per = store.first, store.per_window
    total = store.n_windows * per
    kl_all = np.zeros(total, np.float64)
    same_all = np.zeros(total, np.float64)
    nll_all = np.zeros(total, np.float64)
    ref_nll = -store.next_lp.astype(np.float64)
    state = state if state is not None else ScoreState()
    pos = start = state._into(kl_all, same_all, nll_all)
    windows = state.windows
    k = 0
    t0 = time.perf_counter()
    for w in range(windows, store.n_windows):
        toks = store.tokens[w].tolist()
        got = prompt_logprobs(toks)
        k = max(k, got.k)
        for r in range(first, first + per):
            a, b = int(store.offsets[pos]), int(store.offsets[pos + 1])
            ref_ids, ref_lp = store.top_ids[a:b], store.top_lp[a:b].astype(np.float64)
            q = dict(zip(got.ids[r], got.logprobs[r], strict=True))
            both = np.fromiter((t in q for t in ref_ids.tolist()), bool, len(ref_ids))
            p_in = ref_lp[both]
            q_in = np.array([q[t] for t in ref_ids[both].tolist()], np.float64)
            p_out = max(1.0 - float(np.exp(p_in).sum()), 1e-12)
            q_out = max(1.0 - float(np.exp(q_in).sum()), 1e-12)
            kl = float((np.exp(p_in) * (p_in - q_in)).sum()) + p_out * (math.log(p_out) - math.log(q_out))
            kl_all[pos] = max(kl, 0.0)
            same_all[pos] = bool(got.ids[r]) and got.ids[r][0] == int(ref_ids[0])
            nll_all[pos] = -float(got.actual[r])
            pos += 1
        windows += 1
        state._keep(kl_all, same_all, nll_all, windows, pos)
        if on_window:
            on_window(state)
        if progress:
            progress(w + 1, store.n_windows)
        if stop is not None and _stopped(stop, kl_all, same_all, nll_all, ref_nll, pos):
            break
    seconds = time.perf_counter() - t0
    return _result(kl_all[:pos], same_all[:pos], nll_all[:pos], store, seconds, k, windows, pos - start)


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
