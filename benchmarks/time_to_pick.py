"""Time to a verified pick: edgekit's main job against the manual llama.cpp workflow, in one run.

Both answer the same question on the same checkpoint, ladder, bar, texts and thread count:
which GGUF type is the smallest whose mean KL divergence from the unquantized model meets the bar?

- edgekit: `edgekit quantize CHECKPOINT --target cpu --json` in a child process with an empty
  cache (a fresh EDGEKIT_CACHE_DIR and --out in a temporary directory); its wall time, its
  peak RSS, its pick, and where its time went (the `phases` of report.json, when it has them).
- manual, as a llama.cpp user does it: llama.cpp's own convert_hf_to_gguf.py to one F32 GGUF
  (the KLD base and the source of every quantization, so no BF16/F16 step is needed),
  `llama-imatrix` on the calibration text, `llama-perplexity --kl-divergence-base` once on the
  F32 file, then per type `llama-quantize --imatrix` and `llama-perplexity --kl-divergence`,
  and the pick by hand: the smallest file whose mean KLD meets the bar. All at -c 512 -t N.

Both start from the same Hugging Face checkpoint directory (for the default model: the one
edgekit's import of the embedded GGUF left in its cache, so the import is in neither wall);
edgekit's empty cache means it builds its reference, importance matrix and CPU bandwidth probe
anew, as on a first run. Each step is one child process: wall time and peak RSS (ru_maxrss from
wait4: the largest single process of that child's tree) are measured per step. edgekit runs
first, so it pays for the colder page cache. --windows N cuts both texts after N windows of 512
tokens (plus 64, so that BOS and tokenizer differences keep N whole windows for both tools).

    python benchmarks/time_to_pick.py                                  # smollm2-135m, the 10-type CPU ladder
    python benchmarks/time_to_pick.py --types Q8_0,Q4_K_M --windows 2  # a short check
    python benchmarks/time_to_pick.py --shape qwen3-0.6b               # random weights, Qwen3-0.6B's config
    python benchmarks/time_to_pick.py --json out.json                  # every figure, as JSON

--shape qwen3-0.6b / qwen3-1.7b writes (once, into edgekit's cache: synthetic/) a checkpoint
with the model's exact config and random BF16 weights (edgekit/models/synthetic.py); Qwen3's
tokenizer is not available offline, so it carries SmolLM2's tokenizer (49,152 tokens; the
converters pad the vocabulary to Qwen3's 151,936 rows), as benchmarks/convert.py and
benchmarks/vllm_moe.py do. Its figures are for timing only; the two picks must still agree.
(Random weights give near-uniform next-token distributions, where edgekit's top-K-plus-one-
bucket KLD is a loose lower bound: 6x under llama-perplexity's full-vocabulary KLD on 0.6B.)
When report.json has a "speed" phase (edgekit measures the pick's speed; the manual workflow
does not), the ratio without it is printed too.
Exit status 1 when the picks differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW = 512  # edgekit's reference window and imatrix chunk; llama.cpp's -c
MARGIN = 64  # tokens beyond N windows when a text is cut: room for BOS and tokenizer differences
SHAPES = ("qwen3-0.6b", "qwen3-1.7b")
GOAL = 0.35  # issue 16: edgekit's wall <= 0.35x the manual workflow's


@dataclass
class Step:
    name: str
    wall_s: float
    peak_rss_bytes: int
    log: str = ""  # stdout + stderr of the step (llama.cpp tools) or stderr (edgekit)
    out: str = ""  # stdout, where kept apart

    def to_dict(self) -> dict:
        return {"step": self.name, "wall_s": round(self.wall_s, 2), "peak_rss_bytes": self.peak_rss_bytes}


@dataclass
class Manual:
    steps: list[Step] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    reference_ppl: float | None = None
    wall_s: float = 0.0


def run_step(name: str, cmd: list[str], env: dict, work: Path, split_stdout: bool = False) -> Step:
    """Run one child process; its wall time and peak RSS (the child's own, from wait4)."""
    log_path, out_path = work / f"{name}.log", work / f"{name}.out"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log, open(out_path, "wb") as out:
        p = subprocess.Popen(cmd, stdout=out if split_stdout else log, stderr=log, env=env, cwd=work)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    step = Step(name, wall, usage.ru_maxrss * 1024, text, out_path.read_text(errors="replace"))
    if p.returncode != 0:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {p.returncode}"
        sys.exit(f"time_to_pick: {name} failed (exit {p.returncode}): {last}  [log: {log_path}]")
    return step


# ---- llama-perplexity's output ------------------------------------------------------------

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def parse_kld(log: str) -> dict:
    """Mean KLD ± its error, PPL(Q)/PPL(base) ± error and same-top rate from the statistics
    `llama-perplexity --kl-divergence` prints."""
    pats = {
        "kld": rf"Mean\s+KLD:\s+{_NUM}\s+±\s+{_NUM}",
        "ppl_ratio": rf"Mean PPL\(Q\)/PPL\(base\)\s*:\s+{_NUM}\s+±\s+{_NUM}",
        "same_top": rf"Same top p:\s+{_NUM}\s+±\s+{_NUM}\s*%",
        "ppl": rf"Mean PPL\(Q\)\s*:\s+{_NUM}\s+±\s+{_NUM}",
    }
    out: dict = {}
    for key, pat in pats.items():
        m = re.search(pat, log)
        if m is None:
            raise ValueError(f"llama-perplexity printed no {key} statistics")
        v, e = float(m.group(1)), float(m.group(2))
        if key == "same_top":
            v, e = v / 100, e / 100
        out[key], out[key + "_stderr"] = v, e
    return out


def parse_final_ppl(log: str) -> float | None:
    m = re.search(rf"Final estimate: PPL = {_NUM}", log)
    return float(m.group(1)) if m else None


def manual_pick(rows: list[dict], bar_text: str) -> str | None:
    """What a user picks from the table: the smallest file (on disk) whose measured statistics
    meet the bar (`kld<=X`, `ppl<=+N%`, `same_top>=X`, edgekit's bar syntax); None when none does.
    Each row: {"type", "size_bytes", "kld", "ppl_ratio", "same_top"}."""
    from edgekit.bench.select import parse_bar

    bar = parse_bar(bar_text)
    passing = [
        r
        for r in rows
        if bar.passes(SimpleNamespace(kld_mean=r["kld"], ppl_ratio=r["ppl_ratio"], same_top=r["same_top"]))
    ]
    return min(passing, key=lambda r: r["size_bytes"])["type"] if passing else None


def normalize_type(fmt: str | None) -> str | None:
    """edgekit's format id (gguf:Q4_K_M) as the llama.cpp type name (Q4_K_M)."""
    if fmt is None:
        return None
    return fmt.split(":", 1)[1] if fmt.startswith("gguf:") else fmt


# ---- inputs --------------------------------------------------------------------------------


def default_types() -> list[str]:
    from edgekit.formats import default_ladder
    from edgekit.profiles.target import get_target

    return [f.id.split(":", 1)[1] for f in default_ladder(get_target("cpu").device) if f.family == "gguf"]


def resolve_checkpoint(model: str, shape: str | None) -> tuple[Path, str]:
    """(HF checkpoint directory, a label); a shape is written once into edgekit's cache."""
    from edgekit.models.source import open_checkpoint
    from edgekit.paths import cache_dir

    if shape is None:
        ck = open_checkpoint(model)
        return ck.path, ck.entry.name
    d = cache_dir() / "synthetic" / f"{shape}-random-seed0"
    if not (d / "model.safetensors").is_file():
        from edgekit.models.synthetic import random_checkpoint

        print(f"writing a random-weight {shape}-shaped checkpoint to {d} (once) ...", flush=True)
        random_checkpoint(shape, d, seed=0, tokenizer_dir=open_checkpoint("smollm2-135m").path)
    return d, f"{shape} (random weights)"


def cut_text(text: str, tokenizer_json: Path, windows: int | None) -> tuple[str, int]:
    """`text` cut after `windows` windows of WINDOW tokens (+ MARGIN) of the checkpoint's own
    tokenizer, at a token boundary of the original text; (text, its token count)."""
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(tokenizer_json)).encode(text, add_special_tokens=False)
    if windows is None or len(enc.ids) <= windows * WINDOW + MARGIN:
        return text, len(enc.ids)
    n = windows * WINDOW + MARGIN
    return text[: enc.offsets[n][0]], n


# ---- the two workflows -----------------------------------------------------------------------


def run_edgekit(
    ckpt: Path, args, types: list[str], default: bool, texts: dict, env: dict, work: Path
) -> tuple[Step, dict, list[str]]:
    cmd = ["quantize", str(ckpt), "--target", "cpu", "--json", "--out", str(work / "runs")]
    cmd += ["--threads", str(args.threads)]
    if not args.auto:  # like for like: the manual workflow has no mixed-precision rungs
        cmd += ["--no-auto"]
    if not default:
        cmd += ["--formats", ",".join(f"gguf:{t}" for t in types)]
    if args.bar != "kld<=0.03":
        cmd += ["--bar", args.bar]
    if texts["evaluation"]["cut"] or args.evaluation:
        cmd += ["--evaluation", texts["evaluation"]["path"]]
    if texts["calibration"]["cut"] or args.calibration:
        cmd += ["--calibration", texts["calibration"]["path"]]
    ek_env = {**env, "EDGEKIT_CACHE_DIR": str(work / "edgekit-cache")}
    step = run_step("edgekit", [sys.executable, "-m", "edgekit.cli.main", *cmd], ek_env, work, True)
    try:
        report = json.loads(step.out)
    except ValueError:
        sys.exit(f"time_to_pick: edgekit printed no JSON report  [log: {work / 'edgekit.log'}]")
    return step, report, ["edgekit", *cmd]


def llama_tools() -> tuple[Path, Path]:
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    for tool in ("llama-imatrix", "llama-perplexity", "llama-quantize"):
        if not (site / "bin" / tool).is_file():
            sys.exit(f"time_to_pick: {site / 'bin' / tool} is missing (scripts/setup.sh builds it)")
    return site / "bin", site / "lib"


def run_manual(ckpt: Path, args, types: list[str], texts: dict, env: dict, work: Path) -> Manual:
    from tests.reference import llamacpp_convert

    conv = llamacpp_convert.converter_dir()
    if conv is None:
        sys.exit("time_to_pick: llama.cpp's convert_hf_to_gguf.py is not installed (scripts/setup.sh)")
    bin_dir, lib_dir = llama_tools()
    env = {**env, "LD_LIBRARY_PATH": str(lib_dir)}
    t, c = str(args.threads), str(WINDOW)
    ev, cal = texts["evaluation"]["path"], texts["calibration"]["path"]
    f32, imat, base = work / "manual-f32.gguf", work / "manual-imatrix.gguf", work / "manual-base.kld"
    m = Manual()
    t0 = time.perf_counter()
    # the converter, with the two adjustments tests/reference/llamacpp_convert.py makes for
    # tokenizer files written by an import (GPT-2 BPE vocabulary path; no effect on time)
    gpt2 = "0" if (ckpt / "tokenizer.model").is_file() else "1"
    cmd = [sys.executable, llamacpp_convert.__file__, str(conv), str(ckpt), str(f32), "", gpt2]
    m.steps.append(run_step("convert-f32", cmd, env, work))
    cmd = [str(bin_dir / "llama-imatrix"), "-m", str(f32), "-f", cal, "-c", c, "-t", t, "-o", str(imat)]
    m.steps.append(run_step("imatrix", cmd, env, work))
    cmd = [str(bin_dir / "llama-perplexity"), "-m", str(f32), "-f", ev, "-c", c, "-t", t]
    m.steps.append(run_step("kld-base", [*cmd, "--kl-divergence-base", str(base)], env, work))
    m.reference_ppl = parse_final_ppl(m.steps[-1].log)
    for ty in types:
        q = work / f"manual-{ty}.gguf"
        cmd = [str(bin_dir / "llama-quantize"), "--imatrix", str(imat), str(f32), str(q), ty, t]
        qs = run_step(f"quantize-{ty}", cmd, env, work)
        cmd = [str(bin_dir / "llama-perplexity"), "-m", str(q), "-f", ev, "-c", c, "-t", t]
        ks = run_step(f"kld-{ty}", [*cmd, "--kl-divergence-base", str(base), "--kl-divergence"], env, work)
        m.steps += [qs, ks]
        try:
            stats = parse_kld(ks.log)
        except ValueError as e:
            sys.exit(f"time_to_pick: kld-{ty}: {e}  [log: {work / f'kld-{ty}.log'}]")
        row = {"type": ty, "size_bytes": q.stat().st_size, **stats}
        row |= {"quantize_s": round(qs.wall_s, 2), "kld_s": round(ks.wall_s, 2)}
        m.rows.append(row)
        if not args.keep:
            q.unlink()
        print(f"  manual {ty:<7} {row['size_bytes'] / 2**20:8.1f} MiB  KLD {kld(row['kld'])}", flush=True)
    m.wall_s = time.perf_counter() - t0
    return m


# ---- report --------------------------------------------------------------------------------


def kld(x: float) -> str:
    """Six decimals, or three significant digits below 0.001 (random weights give 1e-5)."""
    return f"{x:.6f}" if x >= 1e-3 or x == 0 else f"{x:.3g}"


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def edgekit_rows(report: dict) -> list[dict]:
    rows = []
    for c in report.get("candidates", []):
        q, a = c.get("quality") or {}, c.get("artifact") or {}
        rows.append(
            {
                "type": normalize_type(c["format"]),
                "status": c.get("status"),
                "size_bytes": a.get("size_bytes"),
                "kld": q.get("kld_mean"),
                "kld_stderr": q.get("kld_stderr"),
            }
        )
    return rows


def versions(bin_dir: Path, lib_dir: Path) -> dict:
    from edgekit.artifact import tool_versions

    out: dict = tool_versions("llama-cpp-python", "gguf", "torch", "transformers", "numpy")
    r = subprocess.run(
        [str(bin_dir / "llama-perplexity"), "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(lib_dir)},
    )
    line = next((ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("version:")), "")
    out["llama.cpp tools"] = line.removeprefix("version:").strip() or None
    return out


def print_summary(res: dict) -> None:
    e, m = res["edgekit"], res["manual"]
    print()
    print(f"time to pick: {res['model']}  ({res['checkpoint']})")
    if res["random_weights"]:
        print("  random weights, the real model's config: timing only (the picks must still agree)")
    print(
        f"  {len(res['types'])} types ({','.join(res['types'])}), bar {res['bar']}, "
        f"{res['threads']} threads, "
        f"-c {WINDOW}; evaluation {res['evaluation']['tokens']} tokens, calibration "
        f"{res['calibration']['tokens']} tokens (the checkpoint's tokenizer)"
    )
    print(f"edgekit  {e['wall_s']:8.1f} s  peak RSS {mib(e['peak_rss_bytes'])}  pick {e['pick']}")
    print(f"  {' '.join(e['command'])}  (empty cache)")
    if e["phases"]:
        for k, v in e["phases"].items():
            print(f"  {k:<10} {v.get('seconds', 0):8.1f} s  peak RSS {mib(v.get('peak_rss_bytes'))}")
    else:
        print("  phases: report.json has none")
    print(f"  measured {', '.join(e['measured_order'])}; reference PPL {e['reference_ppl']}")
    print(f"manual   {m['wall_s']:8.1f} s  peak RSS {mib(m['peak_rss_bytes'])}  pick {m['pick']}")
    for s in m["steps"]:
        if not s["step"].startswith(("quantize-", "kld-")) or s["step"] == "kld-base":
            print(f"  {s['step']:<10} {s['wall_s']:8.1f} s  peak RSS {mib(s['peak_rss_bytes'])}")
    print(f"  per type: quantize {m['quantize_s']:.1f} s, llama-perplexity KLD {m['kld_s']:.1f} s in all")
    print(f"  reference PPL {m['reference_ppl']} (llama-perplexity)")
    ek = {r["type"]: r for r in e["rows"]}
    print(f"  {'type':<8} {'MiB':>8} {'llama.cpp KLD':>20} {'edgekit KLD':>20}  edgekit")
    for r in m["rows"]:
        x = ek.get(r["type"], {})
        ekk = f"{kld(x['kld'])} ± {kld(x['kld_stderr'])}" if x.get("kld") is not None else "-"
        llk = f"{kld(r['kld'])} ± {kld(r['kld_stderr'])}"
        print(f"  {r['type']:<8} {r['size_bytes'] / 2**20:8.1f} {llk:>20} {ekk:>20}  {x.get('status', '')}")
    print(f"ratio edgekit/manual  {res['ratio']:.3f}  (goal <= {GOAL})")
    if res["ratio_without_speed"] is not None:
        print(
            f"  {res['ratio_without_speed']:.3f} without edgekit's speed phase (the manual workflow "
            "measures no speed)"
        )
    print(f"picks  edgekit {e['pick']}, manual {m['pick']}: {'equal' if res['picks_equal'] else 'DIFFERENT'}")
    print("versions  " + ", ".join(f"{k} {v}" for k, v in res["tool_versions"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="catalogue name or HF directory [smollm2-135m]")
    ap.add_argument("--shape", choices=SHAPES, help="random weights with this model's exact config")
    ap.add_argument("--types", help="comma-separated GGUF types [edgekit's default CPU ladder]")
    ap.add_argument("--bar", default="kld<=0.03", help="quality bar, edgekit's syntax [kld<=0.03]")
    ap.add_argument("--evaluation", help="evaluation text [edgekit/data/evaluation.txt]")
    ap.add_argument("--calibration", help="calibration text [edgekit/data/calibration.txt]")
    ap.add_argument("--windows", type=int, help=f"cut both texts to N windows of {WINDOW} tokens (N >= 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both workflows [2]")
    ap.add_argument(
        "--auto", action="store_true", help="let edgekit add gguf:auto rungs (the manual workflow has none)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory and every GGUF")
    ap.add_argument("--workdir", type=Path, help="work directory [a new temporary one]")
    ap.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write every figure as JSON (- stdout)"
    )
    args = ap.parse_args(argv)
    if args.windows is not None and args.windows < 2:
        ap.error("--windows must be at least 2 (llama-perplexity needs two windows of text)")
    from edgekit.bench.select import parse_bar
    from edgekit.errors import EdgekitError
    from edgekit.text import default_calibration_text, default_evaluation_text, read_text_file

    try:
        parse_bar(args.bar)
        all_types = default_types()
        types = [t.strip().upper() for t in args.types.split(",")] if args.types else all_types
        unknown = [t for t in types if t not in all_types + ["F16", "BF16"]]
        if unknown:
            ap.error(f"--types: {unknown[0]} is not a GGUF type of edgekit's ladder ({','.join(all_types)})")
        ckpt, label = resolve_checkpoint(args.model, args.shape)
        sources = {
            "evaluation": read_text_file(args.evaluation, "evaluation text")
            if args.evaluation
            else default_evaluation_text(),
            "calibration": read_text_file(args.calibration, "calibration text")
            if args.calibration
            else default_calibration_text(),
        }
    except EdgekitError as e:
        sys.exit(f"time_to_pick: {e.one_line()}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgekit-ttp-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = {}
    for name, text in sources.items():
        cut, n = cut_text(text, ckpt / "tokenizer.json", args.windows)
        path = work / f"{name}.txt"
        path.write_text(cut, encoding="utf-8")
        texts[name] = {"path": str(path), "tokens": n, "chars": len(cut), "cut": cut != text}
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(args.threads),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if os.cpu_count() != args.threads:
        print(
            f"note: {os.cpu_count()} CPUs here; edgekit scores on all of them, llama.cpp's tools on -t "
            f"{args.threads}",
            flush=True,
        )
    print(f"work directory {work}", flush=True)
    print("edgekit: quantize --target cpu from an empty cache ...", flush=True)
    ek_step, report, ek_cmd = run_edgekit(ckpt, args, types, args.types is None, texts, env, work)
    print(f"  {ek_step.wall_s:.1f} s, pick {report.get('pick')}", flush=True)
    print(
        "manual: convert, llama-imatrix, llama-perplexity base, then quantize + KLD per type ...", flush=True
    )
    man = run_manual(ckpt, args, types, texts, env, work)
    m_pick = manual_pick(man.rows, args.bar)
    e_pick = normalize_type(report.get("pick"))
    bin_dir, lib_dir = llama_tools()
    speed_s = float(((report.get("phases") or {}).get("speed") or {}).get("seconds") or 0.0)
    steps = [s.to_dict() for s in man.steps]
    res = {
        "model": label,
        "checkpoint": str(ckpt),
        "random_weights": args.shape is not None,
        "tokenizer": "SmolLM2's (Qwen3's is not available offline)" if args.shape else "the checkpoint's",
        "types": types,
        "bar": args.bar,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "window": WINDOW,
        "evaluation": texts["evaluation"],
        "calibration": texts["calibration"],
        "edgekit": {
            "command": ek_cmd,
            "wall_s": round(ek_step.wall_s, 2),
            "peak_rss_bytes": ek_step.peak_rss_bytes,
            "pick": e_pick,
            "phases": report.get("phases"),
            "measured_order": [normalize_type(f) for f in report.get("measured_order", [])],
            "reference_ppl": (report.get("reference") or {}).get("ppl"),
            "positions": (report.get("reference") or {}).get("positions"),
            "rows": edgekit_rows(report),
        },
        "manual": {
            "reference": "one F32 GGUF from llama.cpp's convert_hf_to_gguf.py: the KLD base and the "
            "source of every llama-quantize",
            "wall_s": round(man.wall_s, 2),
            "peak_rss_bytes": max(s.peak_rss_bytes for s in man.steps),
            "pick": m_pick,
            "reference_ppl": man.reference_ppl,
            "quantize_s": round(sum(s.wall_s for s in man.steps if s.name.startswith("quantize-")), 2),
            "kld_s": round(
                sum(s.wall_s for s in man.steps if s.name.startswith("kld-") and s.name != "kld-base"), 2
            ),
            "steps": steps,
            "rows": man.rows,
        },
        "ratio": round(ek_step.wall_s / man.wall_s, 3),
        # edgekit also measures the pick's speed (phase "speed"), which the manual workflow never does
        "ratio_without_speed": round((ek_step.wall_s - speed_s) / man.wall_s, 3) if speed_s else None,
        "goal": f"ratio <= {GOAL}, equal picks",
        "picks_equal": e_pick == m_pick,
        "tool_versions": versions(bin_dir, lib_dir),
    }
    print_summary(res)
    if args.json == "-":
        print(json.dumps(res, indent=1))
    elif args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"figures: {args.json}")
    if args.keep:
        print(f"kept {work}")
    elif args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if res["picks_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
