"""llama.cpp through llama-cpp-python: load a GGUF, score token sequences, generate with timings,
and the KV cache as llama.cpp allocates it (the planner's figure, and the one it reports at load)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.gguf_io import ggml_types
from edgekit.runtimes.base import Generation, NotSupported

if TYPE_CHECKING:
    from edgekit.models.arch import Arch

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


N_UBATCH = 512  # tokens per compute step load() asks for (llama.cpp's default), at most n_ctx
CTX_PAD = 256  # llama_context pads n_ctx (and each sequence's share) to a multiple of this
SWA_PAD = 256  # llama_kv_cache_iswa pads the sliding-window cache to a multiple of this


@dataclass(frozen=True)
class Options:
    """`-o gpu_layers=N`: layers offloaded to the GPU (-1 all, 0 none; default: --device decides);
    `-o seed=N`: the sampler's seed; `-o kv_type=q8_0`: the K and V cache element type
    (llama.cpp -ctk/-ctv; a quantized V cache needs flash attention, which it then turns on);
    `-o flash_attn=true`: flash attention; `-o swa_full=true`: sliding-window layers cache the
    whole context (llama.cpp --swa-full) instead of their window and one ubatch."""

    gpu_layers: int | None = None
    seed: int = 0
    kv_type: str = "f16"
    flash_attn: bool = False
    swa_full: bool = False


@dataclass(frozen=True)
class KVCache:
    """One KV cache as llama.cpp allocates it (a model with sliding-window layers has two: the
    full-attention layers' and the window's): per sequence stream `cells` slots of `layers`
    layers, K (and V) rows of the cache's element types."""

    cells: int
    layers: int
    streams: int
    k_type: str
    v_type: str
    k_bytes: int
    v_bytes: int

    @property
    def nbytes(self) -> int:
        return self.k_bytes + self.v_bytes


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def kv_caches(
    arch: Arch, ctx: int, kv_type: str = "f16", seqs: int = 1, options: object = None
) -> list[KVCache]:
    """The KV caches llama.cpp allocates for `seqs` sequences of `ctx` tokens (llama_context,
    llama_kv_cache, llama_kv_cache_iswa): every sequence its own stream of `ctx` cells padded to
    256; layers llama.cpp attends through a sliding window (`Arch.gguf_sliding_layer`) a second
    cache of window + ubatch cells, padded to 256 and at most the context (the whole context
    under swa_full); K and V rows of n_kv_heads x head_dim, latent attention (MLA) one K row of
    kv_lora_rank + RoPE dims and no V (`Arch.kv_row_elements`); ggml row sizes of the type."""
    swa_full = bool(getattr(options, "swa_full", False))
    cells = _pad(ctx, CTX_PAD)
    ubatch = min(ctx * seqs, N_UBATCH)
    sliding = [arch.gguf_sliding_layer(i) for i in range(arch.n_layers)]
    groups = [(cells, sliding.count(False))]
    if any(sliding):
        swa_cells = cells if swa_full else min(cells, _pad(arch.sliding_window + ubatch, SWA_PAD))
        groups.append((swa_cells, sliding.count(True)))
    gt = ggml_types.get(kv_type)
    k_row, v_row = (gt.nbytes(n) for n in arch.kv_row_elements())
    return [
        KVCache(n, layers, seqs, kv_type, kv_type, layers * seqs * n * k_row, layers * seqs * n * v_row)
        for n, layers in groups
    ]


def kv_cache_bytes(arch: Arch, ctx: int, kv_type: str = "f16", seqs: int = 1, options: object = None) -> int:
    """Bytes of KV cache llama.cpp allocates (the capability edgekit.runtimes.base names)."""
    return sum(c.nbytes for c in kv_caches(arch, ctx, kv_type, seqs, options))


# llama_kv_cache's line at allocation: "size = 2.00 MiB (4096 cells, 2 layers, 1/1 seqs),
# K (f16): 1.00 MiB, V (f16): 1.00 MiB"; the only account of the allocation llama-cpp-python
# reaches (two decimals of MiB)
_KV_LOG = re.compile(
    r"llama_kv_cache: size = *([\d.]+) MiB \( *(\d+) cells, *(\d+) layers, *(\d+)/(\d+) seqs\), "
    r"K \((\w+)\): *([\d.]+) MiB, V \((\w+)\): *([\d.]+) MiB"
)


@dataclass(frozen=True)
class KVCacheLog:
    """One KV cache as llama.cpp reported it when it allocated it (sizes rounded to 0.01 MiB)."""

    mib: float  # K and V together
    cells: int
    layers: int
    seqs: int
    streams: int
    k_type: str
    k_mib: float
    v_type: str
    v_mib: float


def parse_kv_log(text: str) -> tuple[KVCacheLog, ...]:
    return tuple(
        KVCacheLog(float(t), int(c), int(n), int(s), int(st), kt, float(km), vt, float(vm))
        for t, c, n, s, st, kt, km, vt, vm in _KV_LOG.findall(text)
    )


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
    kv_type: str = "f16",
    flash_attn: bool = False,
    swa_full: bool = False,
) -> LlamaCppSession:
    """`device` and `scoring` are the registry's common options (edgekit.runtimes.base):
    device "cpu" keeps every layer on the CPU, "cuda" offloads all; scoring=False drops
    the per-position logits (`logits_all`), which `generate` and `generate_tokens` never need.
    The session's `kv_caches` is llama.cpp's own account of the KV cache it allocated."""
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
    if kv_type not in kv_cache_types:
        raise EdgekitError(
            f"llama.cpp has no {kv_type} KV cache", f"choose one of {', '.join(kv_cache_types)}"
        )
    ggml_type = ggml_types.get(kv_type)
    t0 = time.perf_counter()
    log: list[str] = []
    try:
        with _log_to(log):
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=min(n_ctx, N_UBATCH),
                n_ubatch=min(n_ctx, N_UBATCH),
                n_threads=threads or os.cpu_count(),
                n_threads_batch=threads or os.cpu_count(),
                n_gpu_layers=gpu_layers,
                logits_all=logits_all,
                seed=seed,
                type_k=ggml_type.id,
                type_v=ggml_type.id,
                # llama.cpp stores a quantized V cache only with flash attention
                flash_attn=flash_attn or ggml_type.block > 1,
                swa_full=swa_full,
                verbose=False,
            )
    except (ValueError, RuntimeError) as e:
        raise EdgekitError(f"{path}: llama.cpp cannot load it ({str(e).splitlines()[0][:120]})") from None
    session = LlamaCppSession(llm, time.perf_counter() - t0, "cuda" if offload and gpu_layers != 0 else "cpu")
    session.kv_caches = parse_kv_log("".join(log))
    return session


class _log_to:
    """Copy llama.cpp's log lines into `lines` while a model loads, passing each one on to the
    callback that was installed (llama-cpp-python's, which prints errors, or all when verbose)."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def __enter__(self) -> None:
        import ctypes

        import llama_cpp

        self.prev = llama_cpp.llama_log_callback()
        self.prev_data = ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(self.prev), ctypes.byref(self.prev_data))

        def record(level: int, text: bytes, data) -> None:
            self.lines.append(text.decode("utf-8", errors="replace"))
            if self.prev:
                self.prev(level, text, data)

        self.callback = llama_cpp.llama_log_callback(record)  # kept alive while installed
        llama_cpp.llama_log_set(self.callback, self.prev_data)

    def __exit__(self, *exc: object) -> None:
        import llama_cpp

        llama_cpp.llama_log_set(self.prev, self.prev_data)


class LlamaCppSession:
    def __init__(self, llm, load_s: float, device: str = "cpu"):
        self.llm = llm
        self.load_s = load_s
        self.n_vocab = llm.n_vocab()
        self.device = device
        self.kv_caches: tuple[KVCacheLog, ...] = ()  # as llama.cpp reported them at load
        self._score_batch = None  # scored_logits' llama_batch, made at its first call

    def tokenize(self, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
        """llama_tokenize: `add_bos` adds the vocabulary's special tokens (BOS when it adds
        one; llama.cpp's add_special), `special` parses special-token text as those tokens."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    @property
    def bos_added(self) -> int | None:
        """The BOS token id when the vocabulary adds one in front of a text, else None."""
        model = self.llm._model
        return model.token_bos() if model.add_bos_token() else None

    def logits(self, tokens: list[int]):
        import numpy as np

        if len(tokens) > self.llm.n_ctx():
            raise EdgekitError(f"{len(tokens)} tokens do not fit the context of {self.llm.n_ctx()}")
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32, copy=True)

    def scored_logits(self, tokens, first: int):
        """The logits of rows first .. len(tokens)-2 only (float32, (len-1-first, n_vocab)), from
        an empty cache: the other rows are not computed (llama.cpp computes the output layer
        only for the tokens a batch flags). A read-only view of llama.cpp's output buffer,
        valid until the next call on this session (copied when the tokens take more than one
        batch)."""
        import ctypes

        import llama_cpp
        import numpy as np

        toks = np.asarray(tokens, dtype=np.int32)
        n = len(toks)
        if n > self.llm.n_ctx():
            raise EdgekitError(f"{n} tokens do not fit the context of {self.llm.n_ctx()}")
        if not 0 <= first < n - 1:
            raise EdgekitError(f"no rows to score: first row {first} of {n} tokens")
        n_batch = self.llm.n_batch
        batch = self._scoring_batch(n_batch)
        ctx = self.llm._ctx.ctx
        self.llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        parts = []
        for b0 in range(0, n, n_batch):
            b1 = min(b0 + n_batch, n)
            size = b1 - b0
            pos = np.arange(b0, b1, dtype=np.int32)
            outputs = int(((pos >= first) & (pos <= n - 2)).sum())
            np.ctypeslib.as_array(batch.token, (size,))[:] = toks[b0:b1]
            np.ctypeslib.as_array(batch.pos, (size,))[:] = pos
            np.ctypeslib.as_array(batch.logits, (size,))[:] = (pos >= first) & (pos <= n - 2)
            batch.n_tokens = size
            rc = llama_cpp.llama_decode(ctx, batch)
            if rc != 0:
                raise EdgekitError(f"llama.cpp could not evaluate the tokens (llama_decode returned {rc})")
            if outputs:
                ptr = ctypes.cast(llama_cpp.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
                rows = np.ctypeslib.as_array(ptr, (outputs, self.n_vocab))
                parts.append(rows if b1 == n else rows.copy())  # the next decode overwrites it
        self.llm.reset()  # the high-level object's cache bookkeeping: nothing is cached for it
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out.flags.writeable = False
        return out

    def _scoring_batch(self, n_batch: int):
        """One llama_batch of n_batch tokens for scored_logits, kept for the session: every
        token in sequence 0."""
        batch = self._score_batch
        if batch is None:
            import llama_cpp
            import numpy as np

            batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
            np.ctypeslib.as_array(batch.n_seq_id, (n_batch,))[:] = 1
            for i in range(n_batch):  # once per session: each token's own sequence-id array
                batch.seq_id[i][0] = 0
            self._score_batch = batch
        return batch

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
        batch = self._score_batch
        if batch is not None:
            import llama_cpp

            llama_cpp.llama_batch_free(batch)
            self._score_batch = None
        self.llm.close()


# the planner's memory model (edgekit.runtimes.base): measured CPU buffers, the default estimate on a GPU
from edgekit.runtimes.cpu_memory import llamacpp_overhead as memory_overhead  # noqa: E402, F401
