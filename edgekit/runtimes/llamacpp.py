"""llama.cpp through llama-cpp-python: load a GGUF, score token sequences, generate with timings."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.runtimes.base import Generation

name = "llama.cpp"


def available() -> tuple[bool, str]:
    try:
        import llama_cpp
    except ImportError:
        return False, 'llama-cpp-python is not installed (pip install "edgekit[gguf]")'
    return True, f"llama-cpp-python {llama_cpp.__version__}"


def load(path, n_ctx: int = 2048, threads: int | None = None, gpu_layers: int | None = None, logits_all: bool = True,
         seed: int = 0) -> LlamaCppSession:  # fmt: skip
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("llama-cpp-python", "gguf") from None
    from edgekit.quantize.gguf_read import check_gguf

    path = Path(path)
    check_gguf(path)
    if gpu_layers is None:
        gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
            n_threads=threads or os.cpu_count(), n_threads_batch=threads or os.cpu_count(),
            n_gpu_layers=gpu_layers, logits_all=logits_all, seed=seed, verbose=False,
        )  # fmt: skip
    except (ValueError, RuntimeError) as e:
        raise EdgekitError(f"{path}: llama.cpp cannot load it ({str(e).splitlines()[0][:120]})") from None
    return LlamaCppSession(llm, time.perf_counter() - t0)


class LlamaCppSession:
    def __init__(self, llm, load_s: float):
        self.llm = llm
        self.load_s = load_s
        self.n_vocab = llm.n_vocab()

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
        toks = self.tokenize(prompt, add_bos=self.llm._model.add_bos_token() if hasattr(self.llm, "_model") else False)
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

    def close(self) -> None:
        self.llm.close()
