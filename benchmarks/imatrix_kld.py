"""Does the importance matrix help? KL divergence of GGUF quantizations of the default model
against its unquantized weights, with and without edgekit's importance matrix.

Reference: the F32 GGUF of the BF16 checkpoint (exactly the BF16 weights), run by the same
llama.cpp build. Text: edgekit's evaluation corpus (never used for calibration), windows of
512 tokens, the second half of each window scored (as llama-perplexity does). Full-vocabulary
KLD per position, float32, computed chunk by chunk.

    python benchmarks/imatrix_kld.py [--mixes Q4_K_M,Q3_K_M,Q2_K] [--windows 14]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log_softmax(x):
    import numpy as np

    m = x.max(-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(-1, keepdims=True))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from edgekit.models.source import open_checkpoint
    from edgekit.quantize import imatrix
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.quantize.gguf_build import default_calibration_text, default_evaluation_text
    from edgekit.runtimes import llamacpp

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--mixes", default="Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K")
    ap.add_argument("--windows", type=int, default=14)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-kld-"))
    ck = open_checkpoint(args.model)
    f32 = work / "f32.gguf"
    convert(ck, f32, Recipe(mix="F32"))
    im = imatrix.collect(ck, default_calibration_text(), ctx=512)
    imp = im.importances()
    ref = llamacpp.load(f32, n_ctx=512)
    ids = ref.tokenize(default_evaluation_text())
    wins = [ids[i : i + 512] for i in range(0, len(ids) - 511, 512)][: args.windows]
    ref_lp = [log_softmax(ref.logits(w)[256:]) for w in wins]
    rows = []
    for mix in args.mixes.split(","):
        for label, recipe in (("none", Recipe(mix=mix)), ("imatrix", Recipe(mix=mix, imatrix=imp))):
            path = work / f"{mix}-{label}.gguf"
            res = convert(ck, path, recipe)
            q = llamacpp.load(path, n_ctx=512)
            kl, same = [], []
            for w, p in zip(wins, ref_lp, strict=True):
                lq = log_softmax(q.logits(w)[256:])
                kl.append((np.exp(p) * (p - lq)).sum(-1))
                same.append(p.argmax(-1) == lq.argmax(-1))
            kl, same = np.concatenate(kl), np.concatenate(same)
            rows.append({"mix": mix, "imatrix": label, "size_mib": round(res.file_bytes / 2**20, 1),
                         "bpw": round(res.bits_per_weight, 3), "mean_kld": round(float(kl.mean()), 5),
                         "kld_stderr": round(float(kl.std(ddof=1) / np.sqrt(len(kl))), 5),
                         "p99_kld": round(float(np.percentile(kl, 99)), 4),
                         "same_top": round(float(same.mean()), 4)})  # fmt: skip
            q.close()
            path.unlink()
    import llama_cpp

    print(json.dumps({"model": args.model, "positions": int(sum(len(w) - 256 for w in wins)),
                      "imatrix_chunks": im.chunk_count, "llama_cpp_python": llama_cpp.__version__,
                      "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
