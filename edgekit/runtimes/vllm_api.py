"""Reading what a vLLM server says: its Prometheus metrics, its streamed completions, its
prompt log-probabilities, its error bodies and the facts its start-up log states (KV cache
size, load time). Pure parsing over the standard library, so it is tested on outputs
recorded from a real vLLM server (tests/runtimes/data/vllm) on any machine.

Formats, as vLLM 0.32 writes them:
- /metrics: Prometheus text exposition; histograms as `<name>_bucket{le=...}` (cumulative),
  `<name>_sum`, `<name>_count`; counters end in `_total`; one series per engine (data
  parallel replicas) which edgekit sums.
- /v1/completions with "stream": true: server-sent events, one `data: {json}` per engine
  step, then `data: [DONE]`; with "return_token_ids" each chunk lists its token ids, with
  "stream_options": {"include_usage": true} a last chunk carries the usage.
- "prompt_logprobs": K (a vLLM extension): per prompt position a map token id -> {logprob,
  rank, decoded_token} holding the top K and the actual prompt token; position 0 is null.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import TopK
from edgekit.stats import quantile_summary

# ---- Prometheus text format --------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _unescape(s: str) -> str:
    return s.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _labels(body: str) -> tuple[tuple[str, str], ...]:
    inner = body[1:-1].strip()
    out, pos = [], 0
    while pos < len(inner):
        m = _LABEL.match(inner, pos)
        if not m:
            raise MetricsFormatError(f"bad label set {body[:80]!r}")
        out.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
    return tuple(out)


def _value(text: str) -> float:
    low = text.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    try:
        return float(text)  # "NaN" parses
    except ValueError:
        raise MetricsFormatError(f"metrics value {text[:40]!r} is not a number") from None


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition; comments and blank lines skipped."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise MetricsFormatError(f"metrics line {n} is not a Prometheus sample: {line[:80]!r}")
        out.append(Sample(m.group(1), _labels(m.group(2)) if m.group(2) else (), _value(m.group(3))))
    return out


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram summed over series: (upper bound, count) ascending, sum, count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made between two scrapes of the same server."""
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus's histogram_quantile: linear inside the bucket holding rank q * count;
        the largest finite bound when the rank falls in the +Inf bucket."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        prev_le, prev_c = 0.0, 0.0
        for le, c in self.buckets:
            if c >= rank:
                if math.isinf(le):
                    return prev_le
                if c == prev_c:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
            prev_le, prev_c = le, c
        return prev_le


class Metrics:
    """One scrape of a vLLM server's /metrics."""

    def __init__(self, samples: Iterable[Sample]):
        self.samples = list(samples)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(parse_prometheus(text))

    def _series(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]

    def total(self, name: str) -> float | None:
        """A counter (or gauge) summed over its series (engines, reasons); None if absent."""
        series = self._series(name) or self._series(name + "_total")
        return sum(s.value for s in series) if series else None

    def gauge_max(self, name: str) -> float | None:
        series = self._series(name)
        return max(s.value for s in series) if series else None

    def histogram(self, name: str) -> Histogram | None:
        buckets: dict[float, float] = {}
        for s in self._series(name + "_bucket"):
            le = s.label("le")
            if le is not None:
                b = _value(le)
                buckets[b] = buckets.get(b, 0.0) + s.value
        count, total = self.total(name + "_count"), self.total(name + "_sum")
        if not buckets and count is None:
            return None
        return Histogram(tuple(sorted(buckets.items())), total or 0.0, count or 0.0)


# metric names across vLLM versions: the first present is used
TTFT = ("vllm:time_to_first_token_seconds",)
ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
E2E = ("vllm:e2e_request_latency_seconds",)
QUEUE = ("vllm:request_queue_time_seconds",)
PREFILL = ("vllm:request_prefill_time_seconds",)
DECODE = ("vllm:request_decode_time_seconds",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def _first_hist(m: Metrics, names) -> Histogram | None:
    for n in names:
        h = m.histogram(n)
        if h is not None:
            return h
    return None


def _summary(h: Histogram | None) -> dict | None:
    if h is None or h.count <= 0:
        return None
    return {"count": int(round(h.count)), **quantile_summary(h.quantile, h.mean)}


def metrics_delta(before: Metrics, after: Metrics) -> dict:
    """What the server itself recorded between two scrapes: latency summaries (quantiles are
    bucket interpolations, coarser than edgekit's client-side ones), token and request counts,
    preemptions."""
    out: dict = {}
    for key, names in (
        ("ttft_s", TTFT),
        ("itl_s", ITL),
        ("e2e_s", E2E),
        ("queue_s", QUEUE),
        ("prefill_s", PREFILL),
        ("decode_s", DECODE),
    ):
        a, b = _first_hist(after, names), _first_hist(before, names)
        out[key] = _summary(a.minus(b) if a is not None and b is not None else a)
    for key, name in (
        ("prompt_tokens", "vllm:prompt_tokens"),
        ("generation_tokens", "vllm:generation_tokens"),
        ("requests_finished", "vllm:request_success"),
        ("preemptions", "vllm:num_preemptions"),
    ):
        now, then = after.total(name), before.total(name)
        out[key] = None if now is None else int(round(now - (then or 0.0)))
    return out


def kv_cache_usage(m: Metrics) -> float | None:
    """Fraction of the KV cache in use now (largest over engines)."""
    for n in KV_USAGE:
        v = m.gauge_max(n)
        if v is not None:
            return v
    return None


# ---- streamed completions ------------------------------------------------------------------


class VllmError(EdgekitError):
    """An error body vLLM returned (HTTP status, one-line message), or an answer edgekit
    cannot read."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class MetricsFormatError(VllmError, ValueError):
    """A /metrics answer that is not the Prometheus text format."""


def error_message(body: bytes | str, status: int | None = None) -> str:
    """The one-line message of a vLLM/OpenAI error body, or the start of whatever came back."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        d = json.loads(text)
    except ValueError:
        d = None
    msg = None
    if isinstance(d, dict):
        err = d.get("error", d)
        msg = err.get("message") if isinstance(err, dict) else (err if isinstance(err, str) else None)
        msg = msg or d.get("detail") or d.get("message")
    msg = str(msg or text.strip() or f"HTTP {status}")
    return " ".join(msg.split())[:300]


def iter_sse(lines: Iterable[bytes | str]) -> Iterator[dict]:
    """The JSON events of a server-sent-event stream, up to `data: [DONE]`. An event that
    carries an error (vLLM reports failures after the stream began this way) raises."""
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line.startswith("data:"):
            continue  # blank separators, comments, "event:" lines
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise VllmError(f"unreadable stream event: {data[:120]!r}") from None
        if isinstance(event, dict) and "error" in event:
            raise VllmError(error_message(data))
        yield event


@dataclass
class StreamChunk:
    """What one streamed completion event adds: text, token ids (when returned), how many
    tokens (token ids, else the usage delta, else 1 for a non-empty chunk), finish reason."""

    text: str
    token_ids: list[int] | None
    tokens: int
    finish_reason: str | None
    usage: dict | None


def completion_chunks(events: Iterable[dict]) -> Iterator[StreamChunk]:
    done = 0  # completion tokens counted so far (usage delta)
    for ev in events:
        try:
            chunk, done = _chunk(ev, done)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            raise VllmError(f"unreadable stream event: {json.dumps(ev, default=str)[:120]!r}") from None
        if chunk is not None:
            yield chunk


def _chunk(ev: dict, done: int) -> tuple[StreamChunk | None, int]:
    usage = ev.get("usage") or None
    choices = ev.get("choices") or []
    if not choices:  # the closing usage-only chunk
        return (StreamChunk("", None, 0, None, dict(usage)) if usage else None), done
    ch = choices[0]
    ids = ch.get("token_ids")
    if ids is not None:
        ids = [int(i) for i in ids]
        n = len(ids)
    elif usage and usage.get("completion_tokens") is not None:
        n = int(usage["completion_tokens"]) - done
    else:
        n = 1 if ch.get("text") else 0
    if usage and usage.get("completion_tokens") is not None:
        done = int(usage["completion_tokens"])
    else:
        done += n
    text = ch.get("text") or ""
    if not isinstance(text, str):
        raise TypeError("text is not a string")
    return StreamChunk(text, ids, n, ch.get("finish_reason"), dict(usage) if usage else None), done


# ---- prompt log-probabilities ----------------------------------------------------------------


def parse_prompt_logprobs(response: dict, prompt: list[int], k: int):
    """From a /v1/completions response made with "prompt_logprobs": k for `prompt` (token ids):
    an edgekit.runtimes.base.TopK -- per predicted position p (predicting prompt token p+1) the
    ids and log-probabilities of vLLM's top k by rank, best first, and the log-probability of
    the actual next token (vLLM always adds it, whatever its rank)."""
    try:
        plp = response["choices"][0]["prompt_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise VllmError(
            "the response has no prompt_logprobs (was the request made with prompt_logprobs?)"
        ) from None
    if not isinstance(plp, list) or len(plp) != len(prompt):
        got = len(plp) if isinstance(plp, list) else type(plp).__name__
        raise VllmError(f"prompt_logprobs covers {got} positions, the prompt has {len(prompt)}")
    ids, lps, actual = [], [], []
    for pos in range(1, len(prompt)):
        entry = plp[pos]
        if not isinstance(entry, dict):
            raise VllmError(f"prompt_logprobs[{pos}] is {type(entry).__name__}, not a map")
        rows = []
        for tid, v in entry.items():
            lp = v["logprob"] if isinstance(v, dict) else v
            rank = v.get("rank") if isinstance(v, dict) else None
            rows.append((int(tid), float(lp), rank))
        want = prompt[pos]
        hit = [lp for tid, lp, _ in rows if tid == want]
        if not hit:
            raise VllmError(f"prompt_logprobs[{pos}] lacks the prompt token {want}")
        actual.append(hit[0])
        top = sorted(rows, key=lambda r: (r[2] if r[2] is not None else 1 << 30, -r[1]))
        top = [r for r in top if r[2] is None or r[2] <= k][:k]
        ids.append([r[0] for r in top])
        lps.append([r[1] for r in top])
    return TopK(ids, lps, actual, k)


# ---- the start-up log ----------------------------------------------------------------------


@dataclass
class LogFacts:
    """What vLLM's start-up log states; None where a line was not seen."""

    version: str | None = None
    kv_cache_tokens: int | None = None
    kv_cache_pool: str | None = None  # GPU | CPU | ...
    max_concurrency: float | None = None  # full max-model-len sequences the KV cache holds
    max_model_len: int | None = None
    available_kv_gib: float | None = None
    model_memory_gib: float | None = None
    model_load_s: float | None = None
    weights_load_s: float | None = None
    engine_init_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


_LOG_RULES = [
    (
        re.compile(r"\bversion (\d+\.\d+\.\d+\S*)"),
        lambda f, m: setattr(f, "version", f.version or m.group(1)),
    ),
    (
        re.compile(
            r"(\w+(?: \+ host)?) KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per "
            r"request: ([\d.]+)x"
        ),
        None,
    ),
    (
        re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
        lambda f, m: setattr(f, "available_kv_gib", float(m.group(1))),
    ),
    (re.compile(r"Model loading took ([\d.]+) GiB memory and ([\d.]+) seconds"), None),
    (
        re.compile(r"Loading weights took ([\d.]+) seconds"),
        lambda f, m: setattr(f, "weights_load_s", float(m.group(1))),
    ),
    (
        re.compile(r"init engine \(.*\) took ([\d.]+) s"),
        lambda f, m: setattr(f, "engine_init_s", float(m.group(1))),
    ),
]


def parse_log(lines: Iterable[str]) -> LogFacts:
    f = LogFacts()
    for line in lines:
        for rx, act in _LOG_RULES:
            m = rx.search(line)
            if not m:
                continue
            try:  # a number the pattern admits but float/int do not ("1.2.3", ",") is no fact
                if act is not None:
                    act(f, m)
                elif "KV cache size" in rx.pattern:
                    kv = m.group(1), int(m.group(2).replace(",", ""))
                    mml = int(m.group(3).replace(",", "")), float(m.group(4))
                    (f.kv_cache_pool, f.kv_cache_tokens), (f.max_model_len, f.max_concurrency) = kv, mml
                else:
                    f.model_memory_gib, f.model_load_s = float(m.group(1)), float(m.group(2))
            except ValueError:
                continue
        if _is_error_line(line):
            f.errors.append(_strip_prefix(line))
    return f


_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b|^\w*(Error|Exception): ")
_PREFIX = re.compile(
    r"^\(\w+ pid=\d+\)\s*|^(INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\]\s*"
)


def _is_error_line(line: str) -> bool:
    return bool(_ERROR.search(line.strip()))


def _strip_prefix(line: str) -> str:
    s = line.strip()
    for _ in range(2):
        s = _PREFIX.sub("", s)
    return s


_WRAPPER = re.compile(r"root cause|initialization failed|failed to start", re.I)


def failure_reason(lines: list[str]) -> str | None:
    """The most telling line of a server that died: the last exception line, else the last
    ERROR line (vLLM prints a traceback, then the exception as its last line)."""
    raised = [
        s
        for s in map(_strip_prefix, lines)
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", s) or re.match(r"^[\w.]*(Error|Exception)$", s)
    ]
    # vLLM re-raises a worker's failure in the engine and the API server as "... failed ... See
    # root cause above": the root cause is the last exception line that is not such a wrapper
    causes = [s for s in raised if not _WRAPPER.search(s)]
    if causes or raised:
        return (causes or raised)[-1][:300]
    for line in reversed(lines):
        if _is_error_line(line):
            return _strip_prefix(line)[:300]
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1][:300] if tail else None
