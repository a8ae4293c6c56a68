"""The main job: plan what fits, measure quality on the way up the ladder, pick the smallest
format that meets the bar, and report the whole frontier with a reason for every rejection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgekit import atomic
from edgekit.artifact import safe_stem, tool_versions
from edgekit.bench.quality import QualityResult, fmt_kld
from edgekit.bench.select import Bar, max_measurements, parse_bar, search
from edgekit.errors import EdgekitError
from edgekit.progress import Progress


def default_ladder(device) -> list[str]:
    """Every format family's candidates for the device: GGUF everywhere; GPTQ/AWQ/FP8 on GPUs
    whose kernels run them natively (so FP8 W8A8 only from compute capability 8.9, and
    block-FP8 only where it is not a slow fallback, which leaves per-channel FP8 for an RTX 4090)."""
    from edgekit.formats import default_ladder as ladder

    return [f.id for f in ladder(device)]


def check_requested(fmts, device, target_name: str) -> None:
    """Formats the user named explicitly that the target cannot run: say what would."""
    for f in fmts:
        f.impl.refuse_on(f, device, target_name)


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
    blocked: str = ""  # why this format cannot be built for this model, if it cannot

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
                f"{self.reference.get('window')} tokens of the evaluation text, the second half of each "
                "scored; KLD over the reference's most likely tokens (until 99.9 % of its mass, at most "
                f"{self.reference.get('k_max')}) plus one bucket for the rest (a lower bound of the "
                "full-vocabulary KLD); same-top = candidate argmax equals the reference's; each candidate "
                "runs on the store's own tokens in --score-runtime where that runtime serves its format, "
                "else in the runtime its format names for a CPU (GGUF: llama.cpp; GPTQ/AWQ/FP8: "
                "transformers, float32 logits; ONNX: onnxruntime); a server runtime (vLLM) returns top-K "
                "prompt log-probabilities, everything outside them one bucket; runtime_floor_kld is the "
                "unquantized checkpoint in --score-runtime against the same store (what two runtimes "
                "disagree by with no quantization at all); PPL ratio paired per position; standard errors "
                "over positions",
                "search": "candidates sorted by planned size; bisection for the smallest passing one, "
                "assuming quality falls with size: at most ceil(log2 n) + 1 are built and measured",
                "fit": "the planner's weights + KV cache at ctx + runtime overhead against the target's "
                "memory",
            },
            "tool_versions": tool_versions("llama-cpp-python", "gguf", "numpy", "transformers", "torch"),
            "notes": self.notes,
        }


def run_main_job(
    model: str,
    target_name: str,
    bar_text: str = "kld<=0.03",
    formats: list[str] | None = None,
    ctx: int | None = None,
    imatrix: str = "auto",
    out_dir: Path = Path("runs"),
    calibration: str | None = None,
    evaluation: str | None = None,
    progress: Progress | None = None,
    score_runtime: str = "transformers",
) -> RunReport:
    from edgekit.bench.reference import reference_store, score_artifact, score_path
    from edgekit.formats import BuildOptions, build, get_format
    from edgekit.models.source import open_checkpoint, peek_entry
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target
    from edgekit.text import default_evaluation_text, read_text_file

    progress = progress or Progress()
    bar = parse_bar(bar_text)  # a malformed bar fails before any work
    target = get_target(target_name)
    fmts = [get_format(f) for f in (formats or default_ladder(target.device))]
    if formats:
        check_requested(fmts, target.device, target.name)
    for f in fmts:
        if f.is_reference:
            raise EdgekitError(
                f"{f.id} is the reference every candidate is measured against, not a candidate"
            )
    if score_runtime != "transformers":  # say what is missing before hours of quantization
        from edgekit.runtimes import registry

        registry.get(score_runtime)
    eval_text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
    entry = peek_entry(model)
    if entry is not None:  # refuse what cannot work before any download, import or conversion
        _refuse_early(entry, fmts)
    progress.say(f"resolving {model}")
    ck = open_checkpoint(model)
    p = plan(ck.entry, target, ctx=ctx, formats=fmts)
    run_dir = Path(out_dir) / f"{safe_stem(ck.entry.name)}-{safe_stem(target.name)}"
    art_dir = run_dir / "artifacts"
    progress.say("reference: scoring the unquantized model on the evaluation text")
    store = reference_store(ck, eval_text, progress=progress.windows)
    candidates = [Candidate(r.format, r.weights_bytes, r.fits, r.to_dict()) for r in p.rows]
    for c in candidates:
        c.blocked = _unbuildable(ck, get_format(c.format))
    ladder = [c for c in candidates if c.fits and not c.blocked]
    scores_dir = run_dir / "scores"

    def scorer(fmt) -> str:
        """The runtime a candidate is scored in: --score-runtime where it serves the format,
        else the runtime that serves the format on a CPU."""
        from edgekit.runtimes import registry

        default = fmt.runtime_for("cpu")
        if score_runtime == default:
            return default
        try:
            info = registry.find(score_runtime)
        except EdgekitError:
            return default
        return score_runtime if (info.serves(fmt.id) or info.name in fmt.runtimes) else default

    def measure(i: int) -> QualityResult:
        c = ladder[i]
        progress.say(f"candidate {c.format}")
        fmt = get_format(c.format)
        sub = Progress(stage=progress.stage, tensor=progress.tensor, chunk=progress.chunk)
        opts = BuildOptions(calibration=calibration if fmt.impl.takes_calibration(fmt) else None)
        if "imatrix" in fmt.impl.options:
            opts = replace(opts, imatrix=imatrix)
        art = build(ck, fmt, art_dir, opts, progress=sub)
        m = art.manifest
        runtime = scorer(fmt)
        c.artifact = {
            "path": str(art.path),
            "size_bytes": art.size_bytes,
            "sha256": m.sha256,
            "bits_per_weight": m.bits_per_weight,
            "imatrix": m.recipe.get("imatrix"),
            "runtime": fmt.runtime_for("cpu"),
        }
        tag = ""
        if runtime != fmt.runtime_for("cpu"):
            c.artifact["scored_by"] = runtime
            tag = f"-{safe_stem(runtime)}"
        if runtime == score_runtime and not floor:
            measure_floor()
        cached = scores_dir / f"{m.sha256[:16]}-{store.key.slug()}{tag}.json"
        with atomic.locked(cached):  # sealed: a damaged or unsealed score is measured again
            if atomic.intact(cached):
                q = QualityResult(**json.loads(cached.read_text()))
            else:
                q = score_artifact(art, store, runtime=runtime, progress=progress.windows)
                atomic.write_json(cached, q.to_dict())
                atomic.seal(cached)
        c.quality = q
        return q

    floor: dict = {}

    def measure_floor() -> None:
        """The unquantized checkpoint in --score-runtime against the llama.cpp reference: what the
        two runtimes disagree by with no quantization at all."""
        tag = "" if score_runtime == "transformers" else f"-{safe_stem(score_runtime)}"
        cached = scores_dir / f"floor-{ck.revision[:16]}-{store.key.slug()}{tag}.json"
        with atomic.locked(cached):
            if atomic.intact(cached):
                floor.update(json.loads(cached.read_text()))
                return
            progress.say(f"runtime floor: the unquantized checkpoint in {score_runtime} against the store")
            q = score_path(ck.path, "bf16", store, runtime=score_runtime, progress=progress.windows)
            floor.update(q.to_dict())
            atomic.write_json(cached, floor)
            atomic.seal(cached)

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
        reference={
            **store.meta,
            "ppl": round(store.reference_ppl(), 4),
            "positions": store.positions,
            "window": store.key.window,
            "k": store.key.k,
            "runtime_floor_kld": floor.get("kld_mean"),
            "score_runtime": score_runtime,
            "runtime_floor_same_top": floor.get("same_top"),
        },
        measured_order=[ladder[i].format for i in outcome.order],
        run_dir=run_dir,
        notes=[
            f"measured {len(outcome.order)} of {len(ladder)} fitting candidates "
            f"(bisection bound: {max_measurements(len(ladder))})"
        ]
        + ([ck.note] if ck.note else []),
    )
    from edgekit.bench.report import write_reports

    write_reports(report)
    return report


def _explain(
    candidates: list[Candidate], ladder: list[Candidate], pick: Candidate | None, bar: Bar, target: str
):
    def gib(n: float) -> str:
        return f"{n / 1024**3:.2f} GiB"

    failed_sizes = [c.planned_bytes for c in ladder if c.quality and not bar.passes(c.quality)]
    largest_fail = max(failed_sizes, default=None)
    for c in candidates:
        if c.blocked:
            c.status, c.reason = "not buildable", c.blocked
        elif not c.fits:
            row = c.plan_row["per_device"]
            c.status, c.reason = (
                "too big",
                f"needs {gib(row['total'])} per device, {target} has {gib(row['capacity'])}",
            )
        elif c is pick:
            assert c.quality is not None  # the pick was measured
            c.status, c.reason = "pick", f"smallest that meets {bar.text} ({_observed(bar, c.quality)})"
        elif c.quality is not None:
            if bar.passes(c.quality):
                c.status, c.reason = (
                    "passes",
                    f"meets {bar.text} ({_observed(bar, c.quality)}) but is larger than the pick",
                )
            else:
                c.status, c.reason = "below the bar", f"{_observed(bar, c.quality)} misses {bar.text}"
        elif pick is not None and c.planned_bytes > pick.planned_bytes:
            c.status, c.reason = "not built", "larger than the pick"
        elif largest_fail is not None and c.planned_bytes <= largest_fail:
            c.status, c.reason = (
                "not built",
                "smaller than a candidate that missed the bar (quality falls with size)",
            )
        else:
            c.status, c.reason = "not built", "not needed by the search"


def _refuse_early(entry, fmts) -> None:
    """One line, before any work, when the reference cannot be built or no candidate can."""
    from edgekit.bench.reference import reference_unbuildable

    why = reference_unbuildable(entry)
    if why:
        raise EdgekitError(
            f"{entry.name}: its reference (the unquantized model as a GGUF, scored in llama.cpp) "
            f"cannot be built: {why}",
            f"`edgekit plan {entry.name}` still plans it",
        )
    blocked = [(f.id, f.impl.unbuildable(f, entry)) for f in fmts]
    if blocked and all(why for _, why in blocked):
        fid, why = blocked[0]
        raise EdgekitError(
            f"no candidate can be built for {entry.name}: {fid}: {why}"
            + (f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""),
            "see `edgekit formats`",
        )


def _unbuildable(ck, fmt) -> str:
    """Why `fmt` cannot be made of this checkpoint (architecture, group divisibility,
    missing producer), or "" when it can."""
    return fmt.impl.unbuildable(fmt, ck.entry)


def _observed(bar: Bar, q: QualityResult) -> str:
    if bar.metric == "kld":
        return f"KLD {fmt_kld(q.kld_mean)} ± {fmt_kld(q.kld_stderr)}"
    if bar.metric == "ppl":
        return f"PPL {100 * (q.ppl_ratio - 1):+.2f}% ± {100 * q.ppl_ratio_stderr:.2f}%"
    return f"same-top {100 * q.same_top:.1f}% ± {100 * q.same_top_stderr:.1f}%"
