"""Every format of one model, scored with one metric against one reference.

GGUF candidates (llama.cpp) and GPTQ / AWQ / FP8 candidates (llm-compressor, scored in the
transformers runtime with float32 logits) are measured on the same tokens of edgekit's
evaluation text against the same reference store (the unquantized checkpoint as an F32
GGUF in llama.cpp). The runtime floor row is the unquantized checkpoint itself in
transformers against that store: the disagreement of the two runtimes with no quantization.

    python benchmarks/formats.py                            # SmolLM2-135M (the embedded model)
    python benchmarks/formats.py --model tiny-qwen3 --model tiny-qwen3-moe
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GGUF = ("gguf:Q4_K_M", "gguf:Q5_K_M", "gguf:Q8_0")
CT = ("gptq:w4g{g}", "gptq:w8g{g}", "awq:w4g{g}", "fp8:dynamic", "fp8:block128")


def resolve(name: str, work: Path) -> Path | str:
    if name in ("tiny-qwen3", "tiny-qwen3-moe"):
        from tests.tiny_models import build_model, build_tokenizer

        d = work / name
        if not (d / "model.safetensors").exists():
            tok = build_tokenizer(work / "tokenizer")
            build_model(d, tok, moe=name.endswith("moe"))
        return d
    return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--samples", type=int, default=None, help="GPTQ/AWQ calibration windows [default: all]")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    from edgekit._quiet import quiet_tqdm

    quiet_tqdm()
    from edgekit.artifact import tool_versions
    from edgekit.bench.reference import reference_store, score_artifact, score_checkpoint_dir
    from edgekit.formats import BuildOptions, build, get_format
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text

    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgekit-formats-"))
    out = []
    for name in args.model or ["smollm2-135m"]:
        ck = open_checkpoint(str(resolve(name, work)))
        store = reference_store(ck, default_evaluation_text())
        floor = score_checkpoint_dir(ck.path, store)
        rows = [
            {
                "format": "unquantized, in transformers (runtime floor)",
                "size_bytes": None,
                "kld": floor.kld_mean,
                "same_top": floor.same_top,
                "ppl_ratio": floor.ppl_ratio,
                "build_s": None,
            }
        ]
        group = 128
        for g in (128, 64, 32):
            try:
                probe = get_format(f"gptq:w4g{g}")
                probe.impl.check_shapes(probe, ck.entry)
                group = g
                break
            except Exception:
                continue
        for spec in GGUF + tuple(s.format(g=group) for s in CT):
            fmt = get_format(spec)
            takes = fmt.impl.takes_calibration(fmt)
            opts = BuildOptions(samples=args.samples if takes and args.samples else None)
            t0 = time.perf_counter()
            art = build(ck, fmt, work / "artifacts", opts)
            build_s = time.perf_counter() - t0
            q = score_artifact(art, store)
            rows.append(
                {
                    "format": spec + ("+imatrix" if art.manifest.recipe.get("imatrix") else ""),
                    "size_bytes": art.size_bytes,
                    "bpw": art.manifest.bits_per_weight,
                    "kld": q.kld_mean,
                    "kld_stderr": q.kld_stderr,
                    "same_top": q.same_top,
                    "ppl_ratio": q.ppl_ratio,
                    "build_s": round(build_s, 1),
                    "runtime": "llama.cpp" if fmt.family == "gguf" else "transformers (float32)",
                }
            )
            print(json.dumps({"model": name, **rows[-1]}), flush=True)
        out.append(
            {
                "model": name,
                "positions": store.positions,
                "reference": store.meta.get("reference"),
                "rows": rows,
            }
        )
    print(
        json.dumps(
            {
                "results": out,
                "tool_versions": tool_versions(
                    "llama-cpp-python", "llmcompressor", "compressed-tensors", "transformers", "torch"
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
