"""The measured frontier of a model: every GGUF type, with and without edgekit's importance
matrix, scored by edgekit's quality store against the unquantized checkpoint.

    python benchmarks/frontier.py [--model smollm2-135m] [--mixes Q8_0,...] [--out runs/frontier]

Prints JSON rows (size on disk, bits per weight, KLD mean ± stderr and p99, same-top rate,
PPL ratio) and writes them to OUT/frontier.json. Method: `edgekit/bench/quality.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIXES = "Q8_0,Q6_K,Q5_K_M,Q5_K_S,Q4_K_M,Q4_K_S,Q3_K_L,Q3_K_M,Q3_K_S,Q2_K"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from edgekit.bench.reference import reference_store, score_gguf
    from edgekit.models.source import open_checkpoint
    from edgekit.quantize.gguf_build import build_gguf
    from edgekit.text import default_evaluation_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--mixes", default=MIXES)
    ap.add_argument("--out", default="runs/frontier")
    args = ap.parse_args()
    out = Path(args.out)
    ck = open_checkpoint(args.model)
    store = reference_store(ck, default_evaluation_text())
    rows = []
    for mix in args.mixes.split(","):
        for imatrix in ("none", "auto"):
            if mix == "Q8_0" and imatrix == "auto":
                continue  # Q8_0 ignores an importance matrix
            art = build_gguf(args.model, mix, out / "artifacts", imatrix=imatrix)
            q = score_gguf(art.path, store)
            rows.append(
                {
                    "type": mix,
                    "imatrix": imatrix != "none",
                    "size_mib": round(art.size_bytes / 2**20, 2),
                    "bpw": art.manifest.bits_per_weight,
                    **{
                        k: v
                        for k, v in q.to_dict().items()
                        if k
                        in (
                            "kld_mean",
                            "kld_stderr",
                            "kld_p99",
                            "same_top",
                            "ppl",
                            "ppl_ratio",
                            "ppl_ratio_stderr",
                            "tokens_per_s",
                        )
                    },
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "model": args.model,
        "revision": ck.revision,
        "reference": store.meta,
        "reference_ppl": store.reference_ppl(),
        "positions": store.positions,
        "k": store.key.k,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
