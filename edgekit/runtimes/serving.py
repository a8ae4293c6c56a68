"""What a server runtime (``server = True``, e.g. vLLM) offers the shared serving benchmark
(edgekit.bench.serve): the runtime starts, stops and talks to its server and parses what it
reports; the benchmark does the clients, TTFT / ITL / throughput and the memory peaks.

A server runtime's module may define ``launch(...) -> ServerLaunch`` (how it will start for a
subject: the device, the layout it plans on a target, extra ``load()`` keywords); without it
the benchmark starts it with the options as given. ``load()`` of a server runtime also takes
``on_spawn(pid)`` (called as soon as the server process exists: its process tree is sampled
for memory), ``on_wait(seconds)`` and ``log_path``; the session it returns is a
``ServerSession``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgekit.errors import EdgekitError


@dataclass
class RequestTiming:
    """One streamed request: when it was sent, when each chunk arrived and how many tokens it
    carried (perf_counter seconds)."""

    sent: float
    chunks: list[tuple[float, int]] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str | None = None
    text: str = ""

    @property
    def generated(self) -> int:
        return sum(n for _, n in self.chunks)

    @property
    def first_at(self) -> float | None:
        return next((t for t, n in self.chunks if n > 0), None)

    @property
    def ttft(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.sent

    @property
    def last_at(self) -> float | None:
        return max((t for t, n in self.chunks if n > 0), default=None)

    def itl(self) -> list[float]:
        """Gaps between tokens after the first; a chunk of n tokens counts its gap n times, 1/n each."""
        out: list[float] = []
        prev = None
        for t, n in self.chunks:
            if n <= 0:
                continue
            if prev is not None:
                out.extend([(t - prev) / n] * n)
            prev = t
        return out


def closed_loop(
    stream: Callable[[list[int], int], RequestTiming],
    prompts: list[list[int]],
    max_tokens: int,
    concurrency: int | None = None,
) -> list[RequestTiming]:
    """Stream one request per prompt through `concurrency` clients (default: all at once),
    each sending its next as soon as the previous finished; their timings, in order."""
    queue = list(range(len(prompts)))
    out: list[Any] = [None] * len(prompts)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                i = queue.pop(0)
            try:
                out[i] = stream(prompts[i], max_tokens)
            except BaseException as e:  # reported below, in the caller's thread
                with lock:
                    errors.append(e)
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency or len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise EdgekitError(str(errors[0])) from None
    return out


@dataclass
class ServerLaunch:
    """How a server runtime will start for one benchmark (its module's ``launch()``)."""

    device: str  # cpu | cuda: where the server runs
    options: Any  # the runtime's Options, the planned layout filled in
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # more load() keywords
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None  # the launch plan, reported as planner["launch"]
    kv_tokens: int | None = None  # KV-cache tokens that plan expects the server to allocate


class ServerSession(Protocol):
    """A running server (what a server runtime's ``load()`` returns)."""

    device: str
    startup_s: float  # from starting the server to it answering
    version: str  # what runs ("vllm 0.33.0")

    def tokenize(self, text: str) -> list[int]: ...

    def stream(self, tokens: list[int], max_tokens: int) -> RequestTiming:
        """One streamed greedy request of exactly `max_tokens` tokens (EOS ignored)."""
        ...

    def metrics(self) -> object:
        """A scrape of the server's own metrics (opaque to the benchmark)."""
        ...

    def metrics_delta(self, before: object, after: object) -> dict[str, Any]:
        """What the server recorded between two scrapes (latency summaries, counts)."""
        ...

    def facts(self) -> dict[str, Any]:
        """What the server reported about itself once stopped or running (its log): includes
        ``kv_cache_tokens`` (or None) and ``errors`` (lines), plus anything else it knows."""
        ...

    def describe(self) -> dict[str, Any]:
        """Extra fields for the result's ``runtime`` entry (the command line, ...)."""
        ...

    def close(self) -> None: ...
