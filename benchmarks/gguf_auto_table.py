"""Standard GGUF types against `gguf:auto` at their sizes (issue 17's Done-when table).

    python benchmarks/gguf_auto_table.py --model tiny-qwen3       # the tests' tiny Qwen3
    python benchmarks/gguf_auto_table.py --model tiny-qwen3-moe   # and Qwen3-MoE
    python benchmarks/gguf_auto_table.py --model smollm2-135m     # any model edgekit resolves
    options: --types Q4_K_M,Q3_K_M  --work DIR  --json OUT

For each standard type: `edgekit quantize MODEL --format gguf:TYPE` (imatrix, edgekit's
calibration text), then `gguf:auto@BYTES` at that file's byte size, and `edgekit eval` of both
against the model on edgekit's evaluation store. tiny-qwen3 / tiny-qwen3-moe are the tests'
fixtures (tests/tiny_models.py: the 600-token BPE tokenizer, 2 layers of hidden 256, trained 40
steps on the frozen corpus tests/tiny_corpus.txt, seed 0), built into the working directory. All
in a fresh edgekit cache under the working directory (EDGEKIT_CACHE_DIR). Prints a markdown
table (size, bpw, KLD mean and p99, same-top, PPL ratio, KLD vs the standard type) and the
walls; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY = {"tiny-qwen3": False, "tiny-qwen3-moe": True}
GOAL = 0.70


def edgekit(args: list[str], env: dict) -> tuple[float, str]:
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"gguf_auto_table: edgekit {' '.join(args)} failed: {p.stderr.strip()[-1500:]}")
    return time.perf_counter() - t0, p.stdout


def tiny_model(name: str, work: Path) -> str:
    from tests.tiny_models import build_model, build_tokenizer

    out = work / name
    if not (out / "config.json").is_file():
        tok = build_tokenizer(work / "tokenizer")
        build_model(out, tok, moe=TINY[name])
    return str(out)


def row(model: str, fmt: str, out: Path, env: dict) -> dict:
    build_s, _ = edgekit(["quantize", model, "--format", fmt, "--out", str(out)], env)
    m = max(out.glob("*.manifest.json"), key=lambda p: p.stat().st_mtime)
    man = json.loads(m.read_text())
    eval_s, text = edgekit(["eval", str(out / man["file"]), "--reference", model, "--json"], env)
    q = json.loads(text)["quality"]
    sens = man.get("sensitivity")  # the manifest's details are top-level keys
    return {
        "format": fmt,
        "file": man["file"],
        "size_bytes": man["size_bytes"],
        "bpw": man["bits_per_weight"],
        "kld_mean": q["kld_mean"],
        "kld_p99": q["kld_p99"],
        "same_top": q["same_top"],
        "ppl_ratio": q["ppl_ratio"],
        "positions": q["positions"],
        "build_s": round(build_s, 1),
        "eval_s": round(eval_s, 1),
        "sensitivity_s": sens.get("wall_seconds") if sens else None,
        "tensor_types": man.get("tensor_types"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-qwen3")
    ap.add_argument("--types", default="Q4_K_M,Q3_K_M")
    ap.add_argument("--work", default=None, help="working directory [default: a temporary one]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="gguf-auto-table-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EDGEKIT_CACHE_DIR": str(work / "cache")}
    model = tiny_model(args.model, work) if args.model in TINY else args.model
    rows = []
    for ty in args.types.split(","):
        std = row(model, f"gguf:{ty}", work / ty, env)
        auto = row(model, f"gguf:auto@{std['size_bytes']}", work / f"auto-{ty}", env)
        auto["kld_vs_standard"] = round(auto["kld_mean"] / std["kld_mean"], 4)
        rows += [std, auto]
    res = {"model": args.model, "rows": rows, "load": os.getloadavg()}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print()
    print("| file | size (B) | bpw | KLD mean | KLD p99 | same-top | PPL ratio | KLD vs standard |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["format"].removeprefix("gguf:") + ("" if "auto" in r["format"] else " (imatrix)")
        vs = f"{r['kld_vs_standard']:.2f}x" if "kld_vs_standard" in r else ""
        print(
            f"| {name} | {r['size_bytes']:,} | {r['bpw']:.4f} | {r['kld_mean']:.6f} | {r['kld_p99']:.4f} | "
            f"{100 * r['same_top']:.2f} % | {r['ppl_ratio']:.4f} | {vs} |"
        )
    bad = [r for r in rows if r.get("kld_vs_standard", 0) > GOAL]
    print(f"\nauto at <= {GOAL:.2f}x of the standard KLD: {'yes' if not bad else 'NO'} ({len(bad)} over)")


if __name__ == "__main__":
    main()
