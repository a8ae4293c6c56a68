"""What a `gguf:auto@BUDGET` build costs against building and scoring the standard type, in one run.

    python benchmarks/gguf_auto_cost.py [--model smollm2-135m] [--type Q4_K_M] [--cold] [--json OUT]

Issue 17 item 5: the whole `gguf:auto@X` build <= 3x the time of building and scoring Q4_K_M.
In a fresh edgekit cache (EDGEKIT_CACHE_DIR in a temporary directory; the model resolved there
first, untimed, so the import of an embedded checkpoint is in neither wall), each step one child
process of the CLI, timed:

1. `edgekit quantize MODEL --format gguf:TYPE` (the reference GGUF, the importance matrix and
   the build, all cold) and `edgekit eval FILE --reference MODEL` (the evaluation store, cold,
   and the score): the standard type's build + score.
2. `edgekit quantize MODEL --format gguf:auto@BYTES` at the standard file's byte size, after it,
   as the main job runs it (the reference, importance matrix and tensor cache are there), and
   `edgekit eval` of it (the store is there): the auto build, and its build + score.
3. With --cold, the same auto build first in a cache of its own (reference and importance matrix
   built for it too).

Prints one JSON object: every wall, the sensitivity pass's wall from the auto manifest, both
KLDs, and the ratios auto build / (standard build + score) and (auto build + score) / (standard
build + score). The machine's load (os.getloadavg) before and after is in it: on shared cores
the walls are noisy, the ratio from one run less so.
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
GOAL = 3.0


def edgekit(args: list[str], env: dict, log: Path) -> tuple[float, str]:
    """(wall seconds, stdout) of one edgekit command; exits with its log on a failure."""
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    log.write_text(f"$ edgekit {' '.join(args)}\n{p.stdout}\n{p.stderr}")
    if p.returncode != 0:
        sys.exit(f"gguf_auto_cost: edgekit {' '.join(args)} failed: {p.stderr.strip()[-1500:]}")
    return wall, p.stdout


def build(model: str, fmt: str, out: Path, env: dict, work: Path, tag: str) -> tuple[float, dict]:
    wall, _ = edgekit(["quantize", model, "--format", fmt, "--out", str(out)], env, work / f"{tag}-build.log")
    manifests = sorted(out.glob("*.manifest.json"), key=lambda p: p.stat().st_mtime)
    m = json.loads(manifests[-1].read_text())
    return wall, m


def score(model: str, path: Path, env: dict, work: Path, tag: str) -> tuple[float, dict]:
    wall, out = edgekit(["eval", str(path), "--reference", model, "--json"], env, work / f"{tag}-eval.log")
    return wall, json.loads(out)["quality"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--type", default="Q4_K_M", help="the standard type whose size the auto mix takes")
    ap.add_argument("--cold", action="store_true", help="also the auto build in a cold cache of its own")
    ap.add_argument("--work", default=None, help="working directory [default: a temporary one]")
    ap.add_argument("--json", default=None, help="write the result here too")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="gguf-auto-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    load0 = os.getloadavg()

    def fresh(name: str) -> dict:
        env = {**base_env, "EDGEKIT_CACHE_DIR": str(work / name / "cache")}
        # the model resolved (an embedded checkpoint imported) in this cache, untimed
        code = f"from edgekit.models.source import open_checkpoint; open_checkpoint({args.model!r})"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        return env

    res: dict = {"model": args.model, "type": args.type, "work": str(work), "load_before": load0}
    cold_env = fresh("cold") if args.cold else None
    env = fresh("main")
    std_wall, std_m = build(args.model, f"gguf:{args.type}", work / "main" / "std", env, work, "std")
    std_path = work / "main" / "std" / std_m["file"]
    std_score_wall, std_q = score(args.model, std_path, env, work, "std")
    budget = std_m["size_bytes"]
    auto_fmt = f"gguf:auto@{budget}"
    auto_wall, auto_m = build(args.model, auto_fmt, work / "main" / "auto", env, work, "auto")
    auto_path = work / "main" / "auto" / auto_m["file"]
    auto_score_wall, auto_q = score(args.model, auto_path, env, work, "auto")
    std_total = std_wall + std_score_wall
    sens = auto_m["sensitivity"]  # the manifest's details are top-level keys
    res.update(
        {
            "standard": {
                "format": f"gguf:{args.type}",
                "size_bytes": budget,
                "bpw": std_m["bits_per_weight"],
                "build_s": round(std_wall, 1),
                "score_s": round(std_score_wall, 1),
                "kld": std_q["kld_mean"],
                "quality": std_q,
            },
            "auto": {
                "format": auto_fmt,
                "size_bytes": auto_m["size_bytes"],
                "bpw": auto_m["bits_per_weight"],
                "build_s": round(auto_wall, 1),
                "score_s": round(auto_score_wall, 1),
                "sensitivity_s": sens.get("wall_seconds", sens.get("seconds")),
                "sensitivity": {k: v for k, v in sens.items() if k != "method"},
                "kld": auto_q["kld_mean"],
                "quality": auto_q,
            },
            "ratio_build": round(auto_wall / std_total, 3),
            "ratio_build_and_score": round((auto_wall + auto_score_wall) / std_total, 3),
            "kld_ratio": round(auto_q["kld_mean"] / std_q["kld_mean"], 4),
            "goal": GOAL,
        }
    )
    if cold_env is not None:
        cold_wall, cold_m = build(args.model, auto_fmt, work / "cold" / "auto", cold_env, work, "cold")
        res["auto_cold"] = {
            "build_s": round(cold_wall, 1),
            "sensitivity_s": cold_m["sensitivity"].get("wall_seconds"),
            "same_file": cold_m["sha256"] == auto_m["sha256"],
        }
        res["ratio_cold_build"] = round(cold_wall / std_total, 3)
    res["load_after"] = os.getloadavg()
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(
        f"standard {args.type}: build {std_wall:.1f} s + score {std_score_wall:.1f} s = {std_total:.1f} s; "
        f"auto: build {auto_wall:.1f} s (sensitivity {res['auto']['sensitivity_s']} s) + score "
        f"{auto_score_wall:.1f} s; ratio {res['ratio_build']:.2f}x (build), "
        f"{res['ratio_build_and_score']:.2f}x (build + score), goal <= {GOAL:g}x; KLD "
        f"{std_q['kld_mean']:.5f} vs {auto_q['kld_mean']:.5f} ({res['kld_ratio']:.3f}x)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
