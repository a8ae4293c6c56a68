"""The main job: plan what fits, measure quality on the way up the ladder, pick the smallest
format that meets the bar, and report the whole frontier with a reason for every rejection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import atomic
from edgekit.artifact import safe_stem, tool_versions
from edgekit.bench.quality import QualityResult
from edgekit.bench.select import Bar, max_measurements, parse_bar, search
from edgekit.errors import EdgekitError
from edgekit.quantize.gguf_build import Progress

# the GGUF ladder the main job searches (unquantized F16/BF16 are the reference, not candidates)
DEFAULT_LADDER = ("gguf:Q2_K", "gguf:Q3_K_S", "gguf:Q3_K_M", "gguf:Q3_K_L", "gguf:Q4_K_S", "gguf:Q4_K_M",
                  "gguf:Q5_K_S", "gguf:Q5_K_M", "gguf:Q6_K", "gguf:Q8_0")  # fmt: skip


@dataclass
class Candidate:
    format: str
    planned_bytes: int
    fits: bool
    plan_row: dict
    artifact: dict | None = None
    quality: QualityResult | None = None
    status: str = ""
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "planned_bytes": self.planned_bytes,
            "fits": self.fits,
            "status": self.status,
            "reason": self.reason,
            "artifact": self.artifact,
            "quality": self.quality.to_dict() if self.quality else None,
            "plan": self.plan_row,
        }


@dataclass
class RunReport:
    model: dict
    target: dict
    bar: Bar
    ctx: int
    candidates: list[Candidate]
    pick: Candidate | None
    reference: dict
    measured_order: list[str]
    run_dir: Path
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "target": self.target,
            "bar": self.bar.to_dict(),
            "ctx": self.ctx,
            "pick": self.pick.format if self.pick else None,
            "pick_artifact": self.pick.artifact if self.pick else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "measured_order": self.measured_order,
            "reference": self.reference,
            "method": {
                "quality": "reference = the unquantized checkpoint (F32 GGUF in llama.cpp); windows of "
                f"{self.reference.get('window')} tokens of the evaluation text, the second half of each scored; "
                f"KLD over the reference's most likely tokens (until 99.9 % of its mass, at most {self.reference.get('k_max')}) plus one bucket for the rest "
                "(a lower bound of the full-vocabulary KLD); same-top = candidate argmax equals the reference's; "
                "PPL ratio paired per position; standard errors over positions",
                "search": "candidates sorted by planned size; bisection for the smallest passing one, "
                "assuming quality falls with size: at most ceil(log2 n) + 1 are built and measured",
                "fit": "the planner's weights + KV cache at ctx + runtime overhead against the target's memory",
            },
            "tool_versions": tool_versions("llama-cpp-python", "gguf", "numpy", "transformers", "torch"),
            "notes": self.notes,
        }


def run_main_job(model: str, target_name: str, bar_text: str = "kld<=0.03", formats: list[str] | None = None,
                 ctx: int | None = None, imatrix: str = "auto", out_dir: Path = Path("runs"),
                 calibration: str | None = None, evaluation: str | None = None,
                 progress: Progress | None = None) -> RunReport:  # fmt: skip
    from edgekit.bench.reference import reference_store, score_gguf
    from edgekit.formats import get_format
    from edgekit.models.source import open_checkpoint
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target
    from edgekit.quantize.gguf_build import build_gguf, default_evaluation_text, read_text_file

    progress = progress or Progress()
    bar = parse_bar(bar_text)  # a malformed bar fails before any work
    target = get_target(target_name)
    fmts = [get_format(f) for f in (formats or DEFAULT_LADDER)]
    non_gguf = [f.id for f in fmts if f.family != "gguf"]
    if non_gguf:
        raise EdgekitError(f"{', '.join(non_gguf)}: only GGUF candidates can be built in this version")
    eval_text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
    progress.say(f"resolving {model}")
    ck = open_checkpoint(model)
    p = plan(ck.entry, target, ctx=ctx, formats=fmts)
    run_dir = Path(out_dir) / f"{safe_stem(ck.entry.name)}-{safe_stem(target.name)}"
    art_dir = run_dir / "artifacts"
    progress.say("reference: scoring the unquantized model on the evaluation text")
    store = reference_store(ck, eval_text, progress=progress.windows)
    candidates = [Candidate(r.format, r.weights_bytes, r.fits, r.to_dict()) for r in p.rows]
    ladder = [c for c in candidates if c.fits]
    scores_dir = run_dir / "scores"

    def measure(i: int) -> QualityResult:
        c = ladder[i]
        progress.say(f"candidate {c.format}")
        art = build_gguf(ck, get_format(c.format).variant, art_dir, imatrix=imatrix, calibration=calibration,
                         progress=Progress(stage=None, tensor=progress.tensor, chunk=progress.chunk))  # fmt: skip
        c.artifact = {"path": str(art.path), "size_bytes": art.size_bytes, "sha256": art.manifest["sha256"],
                      "bits_per_weight": art.manifest["bits_per_weight"], "imatrix": art.manifest["recipe"]["imatrix"]}  # fmt: skip
        cached = scores_dir / f"{art.manifest['sha256'][:16]}-{store.key.slug()}.json"
        if cached.is_file():
            q = QualityResult(**json.loads(cached.read_text()))
        else:
            q = score_gguf(art.path, store, progress=progress.windows)
            atomic.write_json(cached, q.to_dict())
        c.quality = q
        return q

    outcome = search(ladder, measure, bar)
    pick = ladder[outcome.pick] if outcome.pick is not None else None
    _explain(candidates, ladder, pick, bar, target.name)
    report = RunReport(
        model={"name": ck.entry.name, "hub_id": ck.entry.hub_id, **ck.to_dict()},
        target=target.to_dict(),
        bar=bar,
        ctx=p.ctx,
        candidates=candidates,
        pick=pick,
        reference={**store.meta, "ppl": round(store.reference_ppl(), 4), "positions": store.positions,
                   "window": store.key.window, "k": store.key.k},  # fmt: skip
        measured_order=[ladder[i].format for i in outcome.order],
        run_dir=run_dir,
        notes=[f"measured {len(outcome.order)} of {len(ladder)} fitting candidates "
               f"(bisection bound: {max_measurements(len(ladder))})"] + ([ck.note] if ck.note else []),  # fmt: skip
    )
    from edgekit.bench.report import write_reports

    write_reports(report)
    return report


def _explain(candidates: list[Candidate], ladder: list[Candidate], pick: Candidate | None, bar: Bar, target: str):
    def gib(n: float) -> str:
        return f"{n / 1024**3:.2f} GiB"

    failed_sizes = [c.planned_bytes for c in ladder if c.quality and not bar.passes(c.quality)]
    largest_fail = max(failed_sizes, default=None)
    for c in candidates:
        if not c.fits:
            row = c.plan_row["per_device"]
            c.status, c.reason = "too big", f"needs {gib(row['total'])} per device, {target} has {gib(row['capacity'])}"
        elif c is pick:
            c.status, c.reason = "pick", f"smallest that meets {bar.text} ({_observed(bar, c.quality)})"
        elif c.quality is not None:
            if bar.passes(c.quality):
                c.status, c.reason = "passes", f"meets {bar.text} ({_observed(bar, c.quality)}) but is larger than the pick"
            else:
                c.status, c.reason = "below the bar", f"{_observed(bar, c.quality)} misses {bar.text}"
        elif pick is not None and c.planned_bytes > pick.planned_bytes:
            c.status, c.reason = "not built", "larger than the pick"
        elif largest_fail is not None and c.planned_bytes <= largest_fail:
            c.status, c.reason = "not built", "smaller than a candidate that missed the bar (quality falls with size)"
        else:
            c.status, c.reason = "not built", "not needed by the search"


def _observed(bar: Bar, q: QualityResult) -> str:
    if bar.metric == "kld":
        return f"KLD {q.kld_mean:.4f} ± {q.kld_stderr:.4f}"
    if bar.metric == "ppl":
        return f"PPL {100 * (q.ppl_ratio - 1):+.2f}% ± {100 * q.ppl_ratio_stderr:.2f}%"
    return f"same-top {100 * q.same_top:.1f}% ± {100 * q.same_top_stderr:.1f}%"
