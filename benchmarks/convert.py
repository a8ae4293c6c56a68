"""One-pass HF -> quantized GGUF against llama.cpp's two-step path, measured side by side.

Two-step (what llama.cpp users run): write an F16 GGUF of the checkpoint, then quantize it
with llama_cpp.llama_model_quantize (the library behind llama-quantize), as two processes.
One-pass: `edgekit`'s converter, one process. Each step runs in a fresh child process;
wall time and peak RSS (VmHWM of that child) are measured; repeats give medians.

    python benchmarks/convert.py                       # SmolLM2-135M (the embedded model)
    python benchmarks/convert.py --model qwen3-0.6b-random --mix Q4_K_M --repeat 3

`qwen3-0.6b-random` builds a random-weight BF16 checkpoint with Qwen3-0.6B's exact shapes
(no download); quantization speed and memory do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
t0 = time.perf_counter()
from edgekit.models.source import _local
step, ckpt, src, out, mix = sys.argv[1:6]
if step == "one-pass" or step == "f16":
    from edgekit.quantize.gguf import Recipe, convert
    convert(_local(Path(ckpt), "local"), Path(out), Recipe(mix=mix if step == "one-pass" else "F16"))
else:
    from edgekit.quantize.gguf_twostep import llama_quantize
    llama_quantize(Path(src), Path(out), mix)
# VmHWM is this process's own peak (ru_maxrss would carry the parent's peak across fork + exec)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"seconds": time.perf_counter() - t0, "peak_rss_bytes": hwm}}))
"""


def run(step: str, ckpt: Path, src: Path | None, out: Path, mix: str) -> dict:
    code = CHILD.format(root=str(ROOT))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, step, str(ckpt), str(src or ""), str(out), mix],
                       capture_output=True, text=True, check=True)  # fmt: skip
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["wall"] = time.perf_counter() - t0  # includes interpreter start-up, as a user sees it
    return d


def random_qwen3_0_6b(where: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import build_tokenizer

    d = where / "qwen3-0.6b-random"
    if (d / "model.safetensors").exists():
        return d
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      max_position_embeddings=40960, rope_theta=1e6)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(d)
    build_tokenizer(d)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m, qwen3-0.6b-random, or a local HF dir")
    ap.add_argument("--mix", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgekit-bench-"))
    if args.model == "smollm2-135m":
        from edgekit.models.source import open_checkpoint

        ckpt = open_checkpoint("smollm2-135m").path
    elif args.model == "qwen3-0.6b-random":
        ckpt = random_qwen3_0_6b(work)
    else:
        ckpt = Path(args.model)
    one, two_a, two_b = [], [], []
    for i in range(args.repeat):
        # alternate the order so that page-cache warmth favours neither path
        order = ("one", "two") if i % 2 == 0 else ("two", "one")
        for which in order:
            if which == "one":
                one.append(run("one-pass", ckpt, None, work / "one.gguf", args.mix))
            else:
                f16 = work / "f16.gguf"
                two_a.append(run("f16", ckpt, None, f16, args.mix))
                two_b.append(run("quantize", ckpt, f16, work / "two.gguf", args.mix))
                f16.unlink()
    med = statistics.median
    t_one = med(r["wall"] for r in one)
    t_two = med(a["wall"] + b["wall"] for a, b in zip(two_a, two_b, strict=True))
    m_one = med(r["peak_rss_bytes"] for r in one)
    m_two = med(max(a["peak_rss_bytes"], b["peak_rss_bytes"]) for a, b in zip(two_a, two_b, strict=True))
    import llama_cpp

    result = {
        "model": args.model, "checkpoint": str(ckpt), "mix": args.mix, "repeats": args.repeat,
        "cpu_threads": os.cpu_count(), "llama_cpp_python": llama_cpp.__version__,
        "one_pass": {"wall_s": round(t_one, 2), "peak_rss_mib": round(m_one / 2**20, 1)},
        "two_step": {"wall_s": round(t_two, 2), "peak_rss_mib": round(m_two / 2**20, 1),
                     "f16_step_wall_s": round(med(a["wall"] for a in two_a), 2),
                     "quantize_step_wall_s": round(med(b["wall"] for b in two_b), 2)},
        "ratio_time": round(t_one / t_two, 3),
        "ratio_peak_rss": round(m_one / m_two, 3),
        "goal": "ratio_time <= 0.6, ratio_peak_rss <= 0.5",
    }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
