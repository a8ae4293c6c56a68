"""Scoring throughput: edgekit against `llama-perplexity --kl-divergence` on the same GGUF.

    python benchmarks/scoring.py [--model smollm2-135m] [--type Q4_K_M] [--threads 2]
                                 [--windows N] [--repeat 2]

One run, side by side: the model's reference store (edgekit) and llama-perplexity's
`--kl-divergence-base` file are made first (not timed against each other: each side does that
once per model), then the candidate GGUF is scored by both, alternately `--repeat` times:
edgekit's `score_gguf` (load, the store's windows, only the scored rows' logits) and
llama-perplexity `--kl-divergence` (process start, load, every row's logits), both with
`--threads` threads and llama.cpp's flash attention off (edgekit's llama.cpp default).
Prints each wall, scored positions per second, their ratio, and both KLDs. llama-perplexity is
the binary scripts/setup.sh builds into the venv (site-packages/bin).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def llama_perplexity() -> tuple[Path, dict]:
    """The llama-perplexity binary setup builds, and the environment it runs in."""
    site = Path(sysconfig.get_paths()["purelib"])
    exe = site / "bin" / "llama-perplexity"
    if not exe.exists():
        raise SystemExit(f"no llama-perplexity at {exe} (scripts/setup.sh builds it)")
    return exe, {**os.environ, "LD_LIBRARY_PATH": str(site / "lib")}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_llama(args: list[str], env: dict) -> tuple[str, float, float]:
    """The log, wall seconds and CPU seconds (all threads) of one llama-perplexity run."""
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if p.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr, wall, cpu


def figure(pattern: str, log: str) -> float:
    m = re.search(pattern, log)
    if not m:
        raise SystemExit(f"llama-perplexity printed no match for {pattern!r}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--type", default="Q4_K_M", help="the GGUF type scored (default Q4_K_M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=None, help="windows of the evaluation text (default all)")
    ap.add_argument("--repeat", type=int, default=2, help="scorings per side, alternating (default 2)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from edgekit.bench.reference import DEFAULT_WINDOW, reference_gguf, reference_store, score_gguf
    from edgekit.models.source import open_checkpoint
    from edgekit.quantize.gguf_build import build_gguf
    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    exe, env = llama_perplexity()
    ck = open_checkpoint(args.model)
    ref = reference_gguf(ck)
    text = default_evaluation_text()
    if args.windows:
        if args.windows < 2:
            ap.error("--windows must be at least 2 (llama-perplexity needs two windows of text)")
        probe = llamacpp.load(ref, n_ctx=DEFAULT_WINDOW, threads=args.threads)
        try:
            toks = probe.tokenize(text, add_bos=True, special=False)
            n = args.windows * DEFAULT_WINDOW
            text = (
                probe.llm.detokenize(toks[: n + 1]).decode("utf-8", errors="ignore")
                if len(toks) > n
                else text
            )
        finally:
            probe.close()
    work = Path(tempfile.mkdtemp(prefix="edgekit-scoring-"))
    cand = build_gguf(ck, args.type, work / "artifacts", imatrix="none").path
    text_file = work / "eval.txt"
    text_file.write_text(text, encoding="utf-8")

    t0 = time.perf_counter()
    store = reference_store(ck, text)
    store_s = time.perf_counter() - t0
    base = work / "base.kld"
    common = ["-f", str(text_file), "-c", str(DEFAULT_WINDOW), "-t", str(args.threads), "-fa", "off"]
    log, base_s, _ = run_llama([str(exe), "-m", str(ref), *common, "--kl-divergence-base", str(base)], env)
    base_ppl = figure(r"Final estimate: PPL = ([\d.]+)", log)
    print(f"{args.model} {args.type}: {store.n_windows} windows, {store.positions} scored positions")
    print(
        f"reference: edgekit store {store_s:.1f} s (PPL {store.reference_ppl():.4f}), "
        f"llama-perplexity base {base_s:.1f} s (PPL {base_ppl:.4f})"
    )

    # wall and CPU seconds (all threads: unlike the wall, not inflated by other processes
    # competing for the cores) per run
    walls: dict[str, list[float]] = {"edgekit": [], "llama-perplexity": []}
    cpus: dict[str, list[float]] = {"edgekit": [], "llama-perplexity": []}
    kld = {}
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        q = score_gguf(cand, store, threads=args.threads)
        walls["edgekit"].append(time.perf_counter() - t0)
        cpus["edgekit"].append(time.process_time() - c0)
        kld["edgekit"] = q.kld_mean
        cmd = [str(exe), "-m", str(cand), *common, "--kl-divergence-base", str(base), "--kl-divergence"]
        log, wall, cpu = run_llama(cmd, env)
        walls["llama-perplexity"].append(wall)
        cpus["llama-perplexity"].append(cpu)
        kld["llama-perplexity"] = figure(r"Mean\s+KLD:\s+([\d.]+)", log)
    best = {k: min(v) for k, v in walls.items()}
    cpu_best = {k: min(v) for k, v in cpus.items()}
    for k, v in walls.items():
        runs = ", ".join(f"{w:.1f}" for w in v)
        print(
            f"{k:>17}: best {best[k]:.1f} s wall ({store.positions / best[k]:.0f} positions/s; "
            f"runs {runs} s), "
            f"{cpu_best[k]:.1f} CPU s, KLD {kld[k]:.6f}"
        )
    ratio = best["llama-perplexity"] / best["edgekit"]
    cpu_ratio = cpu_best["llama-perplexity"] / cpu_best["edgekit"]
    print(f"edgekit throughput / llama-perplexity's: {ratio:.2f}x by wall, {cpu_ratio:.2f}x by CPU seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
