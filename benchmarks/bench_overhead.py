"""What `edgekit bench` costs: its decode tok/s divided by a bare llama-cpp-python loop's, from one run.

    python benchmarks/bench_overhead.py [ARTIFACT] [--repeat 5] [--prompt-tokens 512] [--gen-tokens 128]

ARTIFACT defaults to the default model's Q4_K_M GGUF (built once under --workdir, no
importance matrix). The two measurements alternate (a b, b a, a b, ...) so that drift and
other load on the machine fall on both alike:

  (a) `edgekit.bench.speed.bench()` with one repeat (child process, one warmup, llama.cpp
      runtime through the registry), its decode tok/s;
  (b) a bare llama-cpp-python loop in this process: `Llama(model_path, n_ctx, n_threads,
      n_threads_batch, n_batch, n_gpu_layers)` with the same values, the same prompt tokens,
      the same warmup right before, then greedy `generate` of the same number of tokens; decode tok/s =
      (tokens - 1) / time from the first token to the last, as edgekit measures it.

Prints both medians (and every value) and the ratio median(a) / median(b); the target is >= 0.97.
Alongside: decode tokens per CPU-second of each process (all threads), a cross-check that
other load on the machine moves much less than wall-clock tok/s.
Each measurement also records the share of the machine's CPU other processes took meanwhile
(llama.cpp's spinning threads slow down many-fold on an oversubscribed machine); the ratio
over the pairs where both stayed under --max-foreign is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Tok:
    """The tokenizer edgekit's llama.cpp session uses, over a bare Llama."""

    def __init__(self, llm):
        self.llm = llm

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def bare_timed(llm, toks: list[int], n: int) -> tuple[float, float, float | None]:
    """(decode tok/s, decode tok per CPU-second, foreign CPU share) of one bare run."""
    from edgekit.bench.speed import cpu_busy_seconds, foreign_share

    busy0, own0, t0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    rate, cpu_rate = bare_once(llm, toks, n)
    share = foreign_share(busy0, cpu_busy_seconds(), time.process_time() - own0, time.perf_counter() - t0)
    return rate, cpu_rate, share


def bare_once(llm, toks: list[int], n: int) -> tuple[float, float]:
    llm.reset()
    first = cpu_first = 0.0
    i = 0
    for _ in llm.generate(toks, temp=0.0):
        i += 1
        if i == 1:
            first, cpu_first = time.perf_counter(), time.process_time()
        if i >= n:
            break
    end, cpu_end = time.perf_counter(), time.process_time()
    return (i - 1) / (end - first), (i - 1) / (cpu_end - cpu_first)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", nargs="?", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", default="runs/bench_overhead")
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="a pair counts as clean when other processes took less than this CPU share",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import llama_cpp

    from edgekit.bench._child import prompt_tokens
    from edgekit.bench.speed import WARMUP_TOKENS, Settings, bench

    if args.artifact:
        path = Path(args.artifact)
    else:
        from edgekit.quantize.gguf_build import build_gguf

        path = build_gguf("smollm2-135m", "Q4_K_M", Path(args.workdir), imatrix="none").path
    settings = Settings(
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        batches=(1,),
        repeats=1,
        warmup=1,
        threads=args.threads,
    )
    ctx = settings.ctx
    gpu_layers = (
        -1 if llama_cpp.llama_supports_gpu_offload() else 0
    )  # what edgekit's runtime picks by default
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=ctx,
        n_batch=min(ctx, 512),
        n_ubatch=min(ctx, 512),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=gpu_layers,
        logits_all=False,
        verbose=False,
    )
    toks = prompt_tokens(_Tok(llm), args.prompt_tokens)

    edge, bare, edge_busy, bare_busy, edge_cpu, bare_cpu = [], [], [], [], [], []
    for i in range(args.repeat):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for which in order:
            if which == "a":
                r = bench(str(path), runtime="llama.cpp", settings=settings, save=False)
                edge.append(r.batch(1).decode_tok_s.median)
                edge_cpu.append(r.batch(1).decode_tok_per_cpu_s.median)
                edge_busy.append(r.foreign_cpu_share)
            else:
                bare_once(
                    llm, toks, min(args.gen_tokens, WARMUP_TOKENS)
                )  # warmup right before, as edgekit's child
                rate, cpu_rate, share = bare_timed(llm, toks, args.gen_tokens)
                bare.append(rate)
                bare_cpu.append(cpu_rate)
                bare_busy.append(share)
        if not args.json:
            print(
                f"repeat {i + 1}: edgekit bench {edge[-1]:.2f} tok/s "
                f"(others {_pct(edge_busy[-1])} of the CPU), "
                f"bare loop {bare[-1]:.2f} tok/s (others {_pct(bare_busy[-1])})",
                flush=True,
            )
    llm.close()
    a, b = statistics.median(edge), statistics.median(bare)
    clean = [
        i
        for i in range(args.repeat)
        if (edge_busy[i] or 0) < args.max_foreign and (bare_busy[i] or 0) < args.max_foreign
    ]
    ca = statistics.median([edge[i] for i in clean]) if clean else None
    cb = statistics.median([bare[i] for i in clean]) if clean else None
    out = {
        "artifact": str(path),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "threads": args.threads,
        "n_ctx": ctx,
        "n_gpu_layers": gpu_layers,
        "repeats": args.repeat,
        "edgekit_decode_tok_s": edge,
        "bare_decode_tok_s": bare,
        "edgekit_median": round(a, 3),
        "bare_median": round(b, 3),
        "ratio": round(a / b, 4),
        "edgekit_foreign_cpu_share": edge_busy,
        "bare_foreign_cpu_share": [None if x is None else round(x, 4) for x in bare_busy],
        "edgekit_decode_tok_per_cpu_s": edge_cpu,
        "bare_decode_tok_per_cpu_s": bare_cpu,
        "cpu_ratio": round(statistics.median(edge_cpu) / statistics.median(bare_cpu), 4),
        "clean_pairs": len(clean),
        "clean_ratio": round(ca / cb, 4) if clean else None,
        "target": 0.97,
        "llama_cpp_python": llama_cpp.__version__,
        "method": "interleaved a b / b a; medians over repeats; "
        "decode = (tokens - 1) / (last - first token time)",
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"decode tok/s median: edgekit bench {a:.2f}, bare llama-cpp-python {b:.2f}; "
            f"ratio {a / b:.3f} (target >= 0.97)"
        )
        print(
            "decode tokens per CPU-second (robust to other load): "
            f"edgekit {statistics.median(edge_cpu):.2f}, "
            f"bare {statistics.median(bare_cpu):.2f}; ratio {out['cpu_ratio']:.3f}"
        )
        if clean:
            print(
                f"over the {len(clean)} pair(s) where other processes took "
                f"< {100 * args.max_foreign:.0f}% of the CPU: "
                f"edgekit {ca:.2f}, bare {cb:.2f}, ratio {ca / cb:.3f}"
            )
        else:
            print("no pair ran on a quiet machine: the ratio above measures the other load, not edgekit")


def _pct(x) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


if __name__ == "__main__":
    main()
