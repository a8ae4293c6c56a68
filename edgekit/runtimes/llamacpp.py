"""llama.cpp through llama-cpp-python: load a GGUF, score token sequences, generate with timings."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.runtimes.base import Generation, NotSupported

name = "llama.cpp"
formats = ("gguf",)
devices = ("cpu", "cuda")
extra = "gguf"
description = "GGUF through llama-cpp-python (CPU; CUDA when built with it)"
packages = ("llama-cpp-python",)
# capabilities (edgekit.runtimes.base)
kv_cache_types = ("f16", "bf16", "q8_0", "q4_0")
kv_fallback = {"fp8": "q8_0"}
layer_split = "llama.cpp --split-mode layer"
host_embedding = True  # on a GPU the input embedding stays in host RAM (it only gathers rows)


@dataclass(frozen=True)
class Options:
    """`-o gpu_layers=N`: layers offloaded to the GPU (-1 all, 0 none; default: --device decides);
    `-o seed=N`: the sampler's seed."""

    gpu_layers: int | None = None
    seed: int = 0


def available() -> tuple[bool, str]:
    try:
        import llama_cpp
    except ImportError:
        return False, 'llama-cpp-python is not installed (pip install "edgekit[gguf]")'
    return True, f"llama-cpp-python {llama_cpp.__version__}"


def load(
    path,
    n_ctx: int = 2048,
    threads: int | None = None,
    gpu_layers: int | None = None,
    logits_all: bool = True,
    seed: int = 0,
    device: str | None = None,
    scoring: bool | None = None,
) -> LlamaCppSession:
    """`device` and `scoring` are the registry's common options (edgekit.runtimes.base):
    device "cpu" keeps every layer on the CPU, "cuda" offloads all; scoring=False drops
    the per-position logits (`logits_all`), which `generate` and `generate_tokens` never need."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("llama-cpp-python", "gguf") from None
    from edgekit.gguf_io.reader import check_gguf

    path = Path(path)
    check_gguf(path)
    if scoring is not None:
        logits_all = scoring
    offload = llama_cpp.llama_supports_gpu_offload()
    if device == "cuda" and not offload:
        raise EdgekitError(
            "this llama-cpp-python build has no GPU offload",
            "reinstall it with CMAKE_ARGS=-DGGML_CUDA=on, or use --device cpu",
        )
    if device not in (None, "cpu", "cuda"):
        raise EdgekitError(f"llama.cpp runs on cpu or cuda, not '{device}'")
    if device == "cpu":
        gpu_layers = 0
    elif device == "cuda" and not gpu_layers:
        gpu_layers = -1
    if gpu_layers is None:
        gpu_layers = -1 if offload else 0
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            n_ubatch=min(n_ctx, 512),
            n_threads=threads or os.cpu_count(),
            n_threads_batch=threads or os.cpu_count(),
            n_gpu_layers=gpu_layers,
            logits_all=logits_all,
            seed=seed,
            verbose=False,
        )
    except (ValueError, RuntimeError) as e:
        raise EdgekitError(f"{path}: llama.cpp cannot load it ({str(e).splitlines()[0][:120]})") from None
    return LlamaCppSession(llm, time.perf_counter() - t0, "cuda" if offload and gpu_layers != 0 else "cpu")


class LlamaCppSession:
    def __init__(self, llm, load_s: float, device: str = "cpu"):
        self.llm = llm
        self.load_s = load_s
        self.n_vocab = llm.n_vocab()
        self.device = device

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def logits(self, tokens: list[int]):
        import numpy as np

        if len(tokens) > self.llm.n_ctx():
            raise EdgekitError(f"{len(tokens)} tokens do not fit the context of {self.llm.n_ctx()}")
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32, copy=True)

    def generate(self, prompt: str, max_tokens: int = 64) -> Generation:
        toks = self.tokenize(
            prompt, add_bos=self.llm._model.add_bos_token() if hasattr(self.llm, "_model") else False
        )
        self.llm.reset()
        t0 = time.perf_counter()
        first = None
        out: list[int] = []
        for tok in self.llm.generate(toks, temp=0.0, reset=True):
            if first is None:
                first = time.perf_counter()
            if tok == self.llm.token_eos() or len(out) >= max_tokens:
                break
            out.append(tok)
        end = time.perf_counter()
        first = first or end
        text = self.llm.detokenize(out).decode("utf-8", errors="replace")
        return Generation(text, len(toks), len(out), self.load_s, first - t0, end - first)

    def generate_tokens(self, tokens: list[int], max_tokens: int, batch: int = 1) -> Generation:
        """Exactly `max_tokens` greedy tokens after `tokens`, EOS ignored, from an empty cache.

        The loop is llama-cpp-python's own generator and nothing else per token, so it costs
        what a bare llama-cpp-python loop costs (benchmarks/bench_overhead.py checks it)."""
        if batch != 1:
            raise NotSupported("llama-cpp-python's Llama decodes one sequence at a time (batch 1 only)")
        if max_tokens < 1:
            raise EdgekitError("max_tokens must be at least 1")
        if len(tokens) + max_tokens > self.llm.n_ctx():
            raise EdgekitError(
                f"{len(tokens)} + {max_tokens} tokens do not fit the context of {self.llm.n_ctx()}"
            )
        llm = self.llm
        llm.reset()  # no prefix reuse: every call prefills the whole prompt
        perf, cpu = time.perf_counter, time.process_time
        n = 0
        first = cpu_first = 0.0
        t0 = perf()
        for _ in llm.generate(tokens, temp=0.0, reset=True):
            n += 1
            if n == 1:
                first, cpu_first = perf(), cpu()
            if n >= max_tokens:
                break
        end, cpu_end = perf(), cpu()
        # CPU seconds of this process (all threads) while decoding: unlike wall time, not
        # inflated when other processes compete for the cores
        return Generation(
            "",
            len(tokens),
            n,
            self.load_s,
            first - t0,
            end - first,
            extra={"decode_cpu_s": cpu_end - cpu_first},
        )

    def close(self) -> None:
        self.llm.close()
