"""The serving benchmark: `edgekit bench` through a server runtime (one that declares
`server = True`, such as vLLM), whatever the engine.

The runtime starts its server once (its `launch()` may plan the layout for a target and
say where it runs; edgekit.runtimes.serving), then, for every concurrency level c in --batch,
c closed-loop clients each send --repeat streamed requests (fixed prompt and output lengths,
greedy, EOS ignored, distinct prompts). Per level: TTFT and inter-token latency from the
client side, decode and total throughput, and what the server's own metrics recorded (the
runtime parses them). Memory: the server's process tree, sampled throughout (RSS; per GPU
through NVML). The result is an ordinary edgekit bench result (batch = concurrency), stored
and compared like the others.
"""

from __future__ import annotations

import os
import platform
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit.artifact import tool_versions
from edgekit.bench import device as devmod
from edgekit.bench.memory import MemorySampler
from edgekit.bench.results import BatchResult, BenchResult, Settings, Stat
from edgekit.bench.subject import Subject, choose_runtime, planner_figures, resolve_subject
from edgekit.errors import EdgekitError
from edgekit.runtimes import options as runtime_options
from edgekit.runtimes import registry
from edgekit.runtimes.serving import RequestTiming, ServerLaunch, closed_loop
from edgekit.stats import latency_summary

METHOD = {
    "concurrency": "--batch N: N clients, each sending its next request as soon as the previous one finished "
    "(closed loop), --repeat requests each; every request has the same prompt and output length, distinct "
    "prompt tokens, greedy sampling, EOS ignored, prefix caching off",
    "ttft": "per request: from sending it to the first streamed token (queueing + prefill + first sample)",
    "itl": "per token after the first: gap between stream chunks / tokens in the chunk",
    "decode_tok_s": "concurrency x (tokens - 1) / (last token - first token), per request: the aggregate "
    "decode "
    "rate while N streams decode together",
    "throughput": "output_tok_s = generated tokens / level wall time; total_tok_s adds the prompt tokens; "
    "requests_per_s = requests / level wall time",
    "server": "the server's own metrics (histograms and counters), difference of scrapes before and "
    "after the "
    "level; quantiles interpolate inside the histogram buckets",
    "load_s": "from starting the server to its health check answering: imports, weight loading, profiling, "
    "KV-cache allocation, compilation / CUDA graphs",
    "peak_rss": "largest sum of VmRSS over the server's process tree, sampled every 0.2 s from start to stop",
    "peak_vram": "largest NVML per-process GPU memory of the server's processes, per GPU, sampled likewise",
}


def prompts_for(tokens: list[int], length: int, count: int) -> list[list[int]]:
    """`count` prompts of `length` tokens cut from `tokens` at different offsets (repeated when
    the text is short), so no two requests share a prefix."""
    if not tokens:
        raise EdgekitError("the tokenizer returned no tokens for the prompt text")
    need = length + count * 7 + 1
    pool = list(tokens)
    while len(pool) < need:
        pool += tokens
    return [pool[7 * i : 7 * i + length] for i in range(count)]


def run_level(session: Any, prompts: list[list[int]], concurrency: int, gen_tokens: int):
    """Closed loop: `concurrency` clients take the next prompt as soon as they are free."""
    t0 = time.perf_counter()
    runs = closed_loop(session.stream, prompts, gen_tokens, concurrency)
    return runs, time.perf_counter() - t0


def level_result(
    c: int, runs: list[RequestTiming], wall: float, prompt_tokens: int, server: dict | None
) -> BatchResult:
    ttft = [r.ttft for r in runs]
    decode = []
    for r in runs:
        span = (r.last_at or 0) - (r.first_at or 0)
        if r.generated > 1 and span > 0:
            decode.append(c * (r.generated - 1) / span)
    gen = sum(r.generated for r in runs)
    tp = {
        "output_tok_s": round(gen / wall, 3),
        "total_tok_s": round((gen + prompt_tokens * len(runs)) / wall, 3),
        "requests_per_s": round(len(runs) / wall, 4),
        "requests": len(runs),
        "wall_s": round(wall, 4),
        "generated_tokens": gen,
    }
    return BatchResult(
        c,
        True,
        None,
        Stat.of(ttft),
        Stat.of(prompt_tokens / t for t in ttft if t),
        Stat.of(decode),
        itl_s=latency_summary(g for r in runs for g in r.itl()),
        throughput=tp,
        server=server,
    )


def serve_bench(
    arg: str | Subject,
    settings: Settings | None = None,
    *,
    runtime: str | None = None,
    target: str | None = None,
    label: str | None = None,
    save: bool = True,
    store: Path | None = None,
    engine: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    options: Sequence[str] = (),
    on_start: Callable[..., None] | None = None,
    on_wait: Callable[[float], None] | None = None,
    on_level: Callable[[BatchResult], None] | None = None,
) -> BenchResult:
    """A serving benchmark of ARTIFACT|MODEL through `runtime` (default: the first server
    runtime that serves its format). `engine` (and `ray_address`) are typed option values,
    `options` `-o key=value` pairs of that runtime."""
    settings = settings or Settings()
    settings.check()
    subject = arg if isinstance(arg, Subject) else resolve_subject(arg)
    host = devmod.detect(label)
    if runtime:
        info = choose_runtime(subject, runtime, settings.device, host)
    else:
        info = registry.for_format(subject.format, server=True)
    if not info.server:
        raise EdgekitError(f"runtime {info.name} is not a server", "the serving benchmark needs one")
    given = {**(engine or {}), "ray_address": ray_address}
    opts = runtime_options.build(info.options, options, given, runtime=info.name)
    return run_serving(
        subject,
        info,
        settings,
        opts,
        host,
        target=target,
        save=save,
        store=store,
        on_start=on_start,
        on_wait=on_wait,
        on_level=on_level,
    )


def _launch(
    rt: Any,
    info: registry.RuntimeInfo,
    subject: Subject,
    settings: Settings,
    opts: Any,
    host,
    target: str | None,
) -> ServerLaunch:
    hook = getattr(rt, "launch", None)
    if not callable(hook):
        if target:
            raise EdgekitError(f"runtime {info.name} plans no layout for --target")
        device = settings.device or ("cuda" if "cuda" in info.devices and host.gpus else info.devices[0])
        return ServerLaunch(device, opts)
    gpu_profile = None
    if subject.entry is not None and host.gpus:
        tgt, _ = devmod.planner_target(host, "cuda")
        gpu_profile = tgt.name if tgt is not None else None
    out = hook(
        subject.entry,
        subject.format,
        ctx=settings.ctx,
        concurrency=max(settings.batches),
        device=settings.device,
        options=opts,
        served=str(subject.path),
        target=target,
        gpu_profile=gpu_profile,
    )
    assert isinstance(out, ServerLaunch)
    return out


def run_serving(
    subject: Subject,
    info: registry.RuntimeInfo,
    settings: Settings,
    opts: Any,
    host: devmod.HostInfo,
    *,
    target: str | None = None,
    save: bool = True,
    store: Path | None = None,
    on_start: Callable[..., None] | None = None,
    on_wait: Callable[[float], None] | None = None,
    on_level: Callable[[BatchResult], None] | None = None,
) -> BenchResult:
    """The serving benchmark of `subject` through the server runtime `info` with options `opts`.
    `on_start(subject, info, log_path)` is called just before the server starts."""
    rt: Any = info.module
    if not info.serves(subject.format):
        raise EdgekitError(
            f"runtime {info.name} does not serve {subject.format} (it serves {', '.join(info.formats)})"
        )
    launch = _launch(rt, info, subject, settings, opts, host, target)
    opts = launch.options
    notes: list[str] = list(subject.notes) + list(launch.notes)
    new_log = getattr(rt, "new_log_path", None)
    log_path = new_log(subject.model or subject.path.name) if callable(new_log) else None
    samplers: list[MemorySampler] = []
    if on_start is not None:
        on_start(subject, info, log_path)
    load_kw: dict[str, Any] = {**runtime_options.to_kwargs(opts), **launch.load_kwargs}
    if log_path is not None:
        load_kw["log_path"] = log_path
    try:
        session = rt.load(
            subject.path,
            n_ctx=settings.ctx,
            threads=settings.threads,
            device=settings.device,
            scoring=False,
            on_wait=on_wait,
            on_spawn=lambda pid: samplers.append(MemorySampler(pid, tree=True).start()),
            **load_kw,
        )
    except BaseException:
        for s in samplers:
            s.stop()
        raise
    device = getattr(session, "device", launch.device) or launch.device
    batches: list[BatchResult] = []
    try:
        try:
            from edgekit.text import default_evaluation_text

            text_tokens = session.tokenize(default_evaluation_text())
        except EdgekitError:
            text_tokens = list(range(10, 10 + 4096))  # a server without a tokenizer: ids are enough
            notes.append(
                "the server has no tokenizer (skip-tokenizer-init): prompts are token ids 10, 11, ..."
            )
        for _ in range(settings.warmup):
            session.stream(
                prompts_for(text_tokens, settings.prompt_tokens, 1)[0], min(settings.gen_tokens, 16)
            )
        offset = 1
        for c in settings.batches:
            n = c * settings.repeats
            prompts = prompts_for(text_tokens, settings.prompt_tokens, offset + n)[offset:]
            offset += n
            before = session.metrics()
            runs, wall = run_level(session, prompts, c, settings.gen_tokens)
            server = session.metrics_delta(before, session.metrics())
            batches.append(level_result(c, runs, wall, settings.prompt_tokens, server))
            if on_level is not None:
                on_level(batches[-1])
    finally:
        for s in samplers:
            s.stop()
        facts = session.facts()
        described = session.describe()
        session.close()
    mem: dict[str, Any] = samplers[0].to_dict() if samplers else {"peak_rss_bytes": 0, "gpus": []}
    gpu_peaks = [g["peak_bytes"] for g in mem["gpus"]]
    peak_vram = max(gpu_peaks) if device == "cuda" and gpu_peaks else None
    measured = peak_vram if device == "cuda" else mem["peak_rss_bytes"]
    tgt, tnote = devmod.planner_target(host, device)
    planner = planner_figures(subject, tgt, tnote, settings, batches, measured, device, runtime=info.name)
    if launch.plan is not None:
        planner["launch"] = launch.plan
        allocated = facts.get("kv_cache_tokens")
        if allocated and launch.kv_tokens is not None:
            planner["kv_tokens_planned"] = launch.kv_tokens
            planner["kv_tokens_vllm"] = (
                allocated  # the server's own figure (the field predates other servers)
            )
            planner["kv_tokens_planned_over_vllm"] = round(launch.kv_tokens / allocated, 4)
    for e in (facts.get("errors") or [])[-3:]:
        notes.append(f"{info.name} logged: {e[:200]}")
    if log_path is not None:
        notes.append(f"{info.name} log: {log_path}")
    version = str(getattr(session, "version", None) or info.version)
    result = BenchResult(
        id=f"{time.strftime('%Y%m%dT%H%M%S')}-{host.fingerprint[:8]}-{secrets.token_hex(3)}",
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        subject=subject.to_dict(),
        runtime={
            "name": info.name,
            "version": version,
            "entry_point": info.target,
            **described,
            "log_facts": facts,
        },
        device=device,
        host=host.to_dict(),
        settings={
            **asdict(settings),
            "batches": list(settings.batches),
            "n_ctx": settings.ctx,
            "threads_used": settings.threads or os.cpu_count(),
            "mode": "serving (batch = concurrent requests)",
            "engine": {
                k: v for k, v in runtime_options.to_kwargs(opts).items() if v not in (None, [], False)
            },
            "target": target,
        },
        load_s=session.startup_s,
        peak_rss_bytes=mem["peak_rss_bytes"],
        peak_vram_bytes=peak_vram,
        batches=batches,
        planner=planner,
        vram={
            "peak_bytes": peak_vram,
            "per_gpu": mem["gpus"],
            "method": mem.get("method"),
            "nvml": mem.get("nvml"),
        },
        tool_versions={
            **tool_versions(),
            **dict(getattr(session, "tool_versions", {}) or {}),
            "python": platform.python_version(),
        },
        notes=notes,
        method=METHOD,
    )
    if save:
        from edgekit.bench.results_store import save_result

        path = save_result(result, store)
        result.notes.append(f"saved to {path}")
    return result
