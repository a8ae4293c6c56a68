"""The results of `edgekit bench`: settings, per-batch figures with their spread, the whole
result as stored (schema edgekit.bench/1). Shared by the single-process benchmark
(edgekit.bench.speed) and the serving benchmark (edgekit.bench.serve)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgekit.errors import EdgekitError
from edgekit.stats import finite, quantile

SCHEMA = "edgekit.bench/1"

METHOD = {
    "ttft": "wall time from the generate call to the first new token (prefill of the whole prompt from "
    "an empty "
    "cache + first greedy sample), inside the measuring process",
    "prefill_tok_s": "batch x prompt tokens / TTFT",
    "decode_tok_s": "batch x (generated tokens - 1) / time from the first new token to the last; greedy, EOS "
    "ignored, exactly --gen-tokens per sequence",
    "repeats": "median, min/max and quartiles over the repeats; each repeat is one generation per batch "
    "size, "
    "after warmup generation(s) of the full prompt and up to 16 tokens that are not counted",
    "load_s": "wall time of the runtime's load() (file to ready session), after its library is imported",
    "peak_rss": "VmHWM of the measuring child process: interpreter + runtime library + model + caches, one "
    "fresh process per bench",
    "peak_vram": "NVML per-process used memory (CUDA context included), largest sample taken after "
    "loading and "
    "after every generation; torch.cuda.max_memory_reserved alongside when torch drives the GPU",
    "roofline": "decode tok/s measured / planner bound (target memory bandwidth / bytes read per decode "
    "step, "
    "edgekit.plan, with the KV cache at the mean decode context: prompt + gen/2)",
    "memory_ratio": "planner prediction (weights + KV cache at n_ctx + runtime overhead, per device) / "
    "measured "
    "peak (RSS on the CPU, VRAM on a GPU)",
    "decode_tok_per_cpu_s": "batch x (generated tokens - 1) / CPU seconds of the measuring process (all "
    "threads) "
    "while decoding, where the runtime reports them (Generation.extra['decode_cpu_s']); unlike tok/s it "
    "barely "
    "moves when other processes compete for the cores",
    "prompt": "the first N tokens of edgekit's evaluation text in the runtime's own tokenizer",
    "foreign_cpu_share": "(machine CPU seconds from /proc/stat - the measuring process's own) / (wall x "
    "cores) "
    "over the measurement: how much other processes competed with it",
}


# ---- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> Stat:
        v = finite(values)
        if not v:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, 0, ())
        o = sorted(v)
        return cls(quantile(o, 0.5), o[0], o[-1], quantile(o, 0.25), quantile(o, 0.75), len(v), tuple(v))

    def to_dict(self, digits: int = 4) -> dict:
        r = lambda x: round(x, digits) if math.isfinite(x) else None  # noqa: E731
        return {
            "median": r(self.median),
            "min": r(self.min),
            "max": r(self.max),
            "q1": r(self.q1),
            "q3": r(self.q3),
            "n": self.n,
            "values": [r(x) for x in self.values],
        }


@dataclass
class BatchResult:
    batch: int
    measured: bool
    reason: str | None = None  # why not measured
    ttft_s: Stat | None = None
    prefill_tok_s: Stat | None = None
    decode_tok_s: Stat | None = None
    roofline: dict | None = None  # bound_tok_s, bytes_per_token, bandwidth_gbs, fraction | reason
    decode_tok_per_cpu_s: Stat | None = (
        None  # decode tokens per CPU-second of the process, when the runtime reports it
    )
    # serving runtimes (vLLM): batch is the number of concurrent requests
    itl_s: dict | None = None  # inter-token latency over all requests: mean, p50, p90, p99, n
    throughput: dict | None = None  # output_tok_s, total_tok_s, requests_per_s over the level's wall time
    server: dict | None = None  # what the server's own metrics recorded during the level

    @property
    def roofline_fraction(self) -> float | None:
        return (self.roofline or {}).get("fraction")

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "measured": self.measured,
            "reason": self.reason,
            "ttft_s": self.ttft_s.to_dict(5) if self.ttft_s else None,
            "prefill_tok_s": self.prefill_tok_s.to_dict(2) if self.prefill_tok_s else None,
            "decode_tok_s": self.decode_tok_s.to_dict(2) if self.decode_tok_s else None,
            "roofline": self.roofline,
            "decode_tok_per_cpu_s": self.decode_tok_per_cpu_s.to_dict(2)
            if self.decode_tok_per_cpu_s
            else None,
        } | {
            k: v
            for k, v in (("itl_s", self.itl_s), ("throughput", self.throughput), ("server", self.server))
            if v
        }


@dataclass
class BenchResult:
    id: str
    created: str
    subject: dict  # path, kind, format, model, size_bytes, sha256
    runtime: dict  # name, version, packages
    device: str  # where the model ran: cpu | cuda
    host: dict  # edgekit.bench.device.HostInfo.to_dict()
    settings: dict
    load_s: float
    peak_rss_bytes: int
    peak_vram_bytes: int | None
    batches: list[BatchResult]
    planner: dict  # target, predicted_peak_bytes, measured_peak_bytes, predicted_over_measured | reason
    vram: dict = field(default_factory=dict)
    foreign_cpu_share: float | None = None  # CPU share other processes took while this ran
    tool_versions: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    method: dict | None = None  # how each figure was measured; default: METHOD (the single-process bench)

    def batch(self, b: int) -> BatchResult | None:
        return next((x for x in self.batches if x.batch == b), None)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "created": self.created,
            "subject": self.subject,
            "runtime": self.runtime,
            "device": self.device,
            "host": self.host,
            "settings": self.settings,
            "load_s": round(self.load_s, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_vram_bytes": self.peak_vram_bytes,
            "vram": self.vram,
            "batches": [b.to_dict() for b in self.batches],
            "planner": self.planner,
            "foreign_cpu_share": self.foreign_cpu_share,
            "notes": list(self.notes),
            "method": self.method or METHOD,
            "tool_versions": self.tool_versions,
        }


@dataclass(frozen=True)
class Settings:
    prompt_tokens: int = 512
    gen_tokens: int = 128
    batches: tuple[int, ...] = (1,)
    repeats: int = 3
    warmup: int = 1
    threads: int | None = None
    device: str | None = None  # cpu | cuda | None: the runtime's best
    n_ctx: int | None = None  # default: prompt + gen
    timeout_s: float | None = None

    def check(self) -> None:
        if self.prompt_tokens < 1:
            raise EdgekitError("--prompt-tokens must be at least 1")
        if self.gen_tokens < 2:
            raise EdgekitError("--gen-tokens must be at least 2 (decode speed needs a second token)")
        if self.repeats < 1 or self.warmup < 0:
            raise EdgekitError("--repeat must be at least 1 and --warmup at least 0")
        if not self.batches or any(b < 1 for b in self.batches):
            raise EdgekitError("--batch sizes must be positive integers")
        if self.threads is not None and self.threads < 1:
            raise EdgekitError("--threads must be at least 1")
        if self.device not in (None, "cpu", "cuda"):
            raise EdgekitError(f"--device must be cpu or cuda, not '{self.device}'")
        if self.n_ctx is not None and self.n_ctx < self.prompt_tokens + self.gen_tokens:
            raise EdgekitError(
                f"--ctx {self.n_ctx} cannot hold {self.prompt_tokens} prompt + {self.gen_tokens} "
                "generated tokens"
            )

    @property
    def ctx(self) -> int:
        return self.n_ctx or self.prompt_tokens + self.gen_tokens


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        out = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise EdgekitError(f"--batch '{text}': give comma-separated integers, e.g. 1,4,16") from None
    if not out or any(b < 1 for b in out):
        raise EdgekitError(f"--batch '{text}': sizes must be positive integers")
    return out
