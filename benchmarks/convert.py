"""One-pass HF -> quantized GGUF against llama.cpp's two-step path, measured side by side.

Two-step, as llama.cpp users run it: llama.cpp's own `convert_hf_to_gguf.py --outtype f16`
writes an F16 GGUF, then llama_cpp.llama_model_quantize (the library behind llama-quantize)
quantizes it. A second, stricter two-step baseline replaces llama.cpp's converter by
edgekit's own F16 writer (the fastest F16 step we know of), so the ratio against it isolates
what skipping the F16 round trip saves. One-pass: edgekit's converter, one process.
Each step runs in a fresh child process; wall time (interpreter start-up included) and peak
RSS (VmHWM of that child) are measured; the paths alternate and repeats give medians.

    python benchmarks/convert.py --llama-cpp-src DIR              # SmolLM2-135M
    python benchmarks/convert.py --llama-cpp-src DIR --model qwen3-0.6b-random

DIR is a llama.cpp source tree of the same version as the installed llama-cpp-python, e.g.
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    DIR=llama_cpp_python-0.3.36/vendor/llama.cpp   (its converter also needs `pip install sentencepiece`)
Without --llama-cpp-src only the stricter baseline runs.

`qwen3-0.6b-random` builds a random-weight BF16 checkpoint with Qwen3-0.6B's exact shapes
(no download) and SmolLM2's tokenizer padded to Qwen3's 151,936 rows (llama.cpp's converter
refuses tokenizers whose pre-tokenizer it does not know); quantization speed and memory do
not depend on the weights' values.
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
if step == "hf-f16":
    import runpy, os, io, contextlib
    conv = Path(src) / "convert_hf_to_gguf.py"
    sys.path[:0] = [str(src), str(Path(src) / "gguf-py")]
    sys.argv = [str(conv), ckpt, "--outtype", "f16", "--outfile", out]
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(str(conv), run_name="__main__")
elif step == "one-pass" or step == "f16":
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
    r = subprocess.run(
        [sys.executable, "-c", code, step, str(ckpt), str(src or ""), str(out), mix],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"{step} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["wall"] = time.perf_counter() - t0  # includes interpreter start-up, as a user sees it
    return d


def random_qwen3_0_6b(where: Path) -> Path:
    import shutil

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from edgekit.models.source import open_checkpoint

    d = where / "qwen3-0.6b-random"
    if (d / "model.safetensors").exists():
        return d
    cfg = Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
        max_position_embeddings=40960,
        rope_theta=1e6,
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(d)
    tok = open_checkpoint("smollm2-135m").path
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / name, d / name)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model", default="smollm2-135m", help="smollm2-135m, qwen3-0.6b-random, or a local HF dir"
    )
    ap.add_argument("--mix", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--llama-cpp-src", default=None, help="llama.cpp source tree holding convert_hf_to_gguf.py"
    )
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
    src = Path(args.llama_cpp_src).resolve() if args.llama_cpp_src else None
    if src and not (src / "convert_hf_to_gguf.py").is_file():
        sys.exit(f"{src}: no convert_hf_to_gguf.py there")
    paths = ["one", "edgekit-f16"] + (["llama.cpp-f16"] if src else [])
    runs: dict[str, list[tuple[dict, ...]]] = {p: [] for p in paths}
    for i in range(args.repeat):
        # rotate the order so that page-cache warmth favours no path
        for which in paths[i % len(paths) :] + paths[: i % len(paths)]:
            if which == "one":
                runs[which].append((run("one-pass", ckpt, None, work / "one.gguf", args.mix),))
                continue
            f16 = work / "f16.gguf"
            a = run("f16" if which == "edgekit-f16" else "hf-f16", ckpt, src, f16, args.mix)
            b = run("quantize", ckpt, f16, work / "two.gguf", args.mix)
            f16.unlink()
            runs[which].append((a, b))
    med = statistics.median

    def summary(rs: list[tuple[dict, ...]]) -> dict:
        out = {
            "wall_s": round(med(sum(r["wall"] for r in steps) for steps in rs), 2),
            "peak_rss_mib": round(med(max(r["peak_rss_bytes"] for r in steps) for steps in rs) / 2**20, 1),
        }
        if len(rs[0]) == 2:
            out["f16_step_wall_s"] = round(med(steps[0]["wall"] for steps in rs), 2)
            out["quantize_step_wall_s"] = round(med(steps[1]["wall"] for steps in rs), 2)
        return out

    import llama_cpp

    one = summary(runs["one"])
    result = {
        "model": args.model,
        "checkpoint": str(ckpt),
        "mix": args.mix,
        "repeats": args.repeat,
        "cpu_threads": os.cpu_count(),
        "llama_cpp_python": llama_cpp.__version__,
        "one_pass": one,
        "goal": "ratio_time <= 0.6, ratio_peak_rss <= 0.5 against llama.cpp's two-step path",
    }
    for key, label in (("llama.cpp-f16", "two_step_llama_cpp"), ("edgekit-f16", "two_step_edgekit_f16")):
        if runs.get(key):
            two = summary(runs[key])
            result[label] = {
                **two,
                "ratio_time": round(one["wall_s"] / two["wall_s"], 3),
                "ratio_peak_rss": round(one["peak_rss_mib"] / two["peak_rss_mib"], 3),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
