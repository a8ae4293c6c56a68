"""The main job: plan what fits, measure quality on the way up the ladder, pick the smallest
format that meets the bar, and report the whole frontier with a reason for every rejection."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgekit import atomic
from edgekit.artifact import safe_stem, tool_versions
from edgekit.bench.quality import QualityResult, fmt_kld
from edgekit.bench.select import Bar, max_measurements, parse_bar, search
from edgekit.bench.sequential import METHOD as SEQUENTIAL_METHOD
from edgekit.bench.sequential import SequentialTest
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


@dataclass(frozen=True)
class JobOptions:
    """The main job's options besides the model, the target and the bar: what `edgekit quantize
    --target` takes and what a sweep file repeats for every job (one declaration for both)."""

    formats: tuple[str, ...] | None = None  # the candidate ladder [default: every family's]
    ctx: int | None = None
    imatrix: str = "auto"  # auto | none | an imatrix GGUF file
    calibration: str | None = None
    evaluation: str | None = None
    speed: str = "pick"  # pick | all | none
    speed_bar: str | None = None
    score_runtime: str = "transformers"
    full: bool = False
    auto: bool = True  # gguf:auto rungs where the standard ladder leaves a gap below its pick

    def kwargs(self) -> dict[str, Any]:
        """As run_main_job's keyword arguments."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["formats"] = list(self.formats) if self.formats else None
        return d


def _is_auto(fmt_id: str) -> bool:
    return fmt_id.startswith(AUTO_PREFIX)


AUTO_PREFIX = "gguf:auto@"


@dataclass(eq=False)  # one candidate is one object: compared by identity
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
    chain: str = ""  # the monotone chain the search bisects it in (family and imatrix setting)
    # how the sequential test decided it (None: every window scored); its resumed_windows are
    # the windows read from the partial-score cache (a decision an earlier run reached), not scored
    sequential: dict | None = None
    speed: Any = None  # job_speed.SpeedFigures: measured on the device, or planned
    # windows of its score taken from an earlier scoring of the same file (this run's
    # sequential one, or an earlier or interrupted run's) instead of being scored again
    resumed_windows: int = 0
    # standard: a type of the ladder; auto: a gguf:auto@BUDGET mix (a rung the job added in a
    # gap of the standard ladder, or one named in --formats)
    kind: str = "standard"

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "kind": self.kind,
            "planned_bytes": self.planned_bytes,
            "fits": self.fits,
            "status": self.status,
            "reason": self.reason,
            "chain": self.chain,
            "artifact": self.artifact,
            "quality": self.quality.to_dict() if self.quality else None,
            "sequential": self.sequential,
            "resumed_windows": self.resumed_windows,
            "speed": self.speed.to_dict() if self.speed is not None else None,
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
    phases: dict = field(default_factory=dict)
    full: bool = False
    speed_bar: Any = None  # job_speed.SpeedBar
    speed_here: bool = False  # the target is this machine: speed measured, not planned
    auto: dict = field(default_factory=dict)  # the auto rungs: on/off, frontier, what the pick saves

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "target": self.target,
            "bar": self.bar.to_dict(),
            "ctx": self.ctx,
            "pick": self.pick.format if self.pick else None,
            "pick_artifact": self.pick.artifact if self.pick else None,
            "pick_speed": self.pick.speed.to_dict() if self.pick and self.pick.speed is not None else None,
            "speed_bar": self.speed_bar.to_dict() if self.speed_bar else None,
            "speed_source": "measured" if self.speed_here else "planned",
            "candidates": [c.to_dict() for c in self.candidates],
            "auto": self.auto,
            "measured_order": self.measured_order,
            "reference": self.reference,
            "phases": self.phases,
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
                "search": "candidates sorted by planned size and grouped in chains (one format family at "
                "one importance-matrix setting), in which quality is assumed to fall with size; each chain "
                "is bisected on its own below the smallest pass found so far, so a failure in one chain "
                "never rules out a candidate of another; within a chain the bisection measures the largest "
                "member only when every smaller one it tried missed: at most the sum over chains of "
                "ceil(log2 (n + 1)) "
                "are built and measured",
                "scoring": "--full: every fitting candidate measured on every window (the whole frontier)"
                if self.full
                else SEQUENTIAL_METHOD,
                "speed": "measured on this machine with edgekit bench's machinery (settings in each "
                "candidate's speed.settings) when the target is this machine, else the planner's roofline; "
                "every figure says which ('source'); with --speed-bar the pick is the smallest candidate "
                "meeting both bars: candidates that pass the quality bar are benchmarked in order of size "
                "until one meets it",
                "auto": "after the standard search settles its pick P (scored on every window), gguf:auto "
                "rungs (measured mixed-precision GGUFs, edgekit.quantize.gguf_auto) are placed at the bits "
                "per weight of every standard GGUF type of the ladder below P and midway between each of "
                "them and the next (the last midway to P), within the range auto mixes reach; they form a "
                "chain of their own, bisected like any other; the pick is the smallest candidate of all "
                "chains that passes (scored on every window); below the ladder's smallest type only when "
                "the rung at its size passes (then a second chain: the smallest mix an auto budget "
                "reaches, and a third and two thirds of the way from it up); none when the standard pick "
                "is the ladder's smallest GGUF type; --no-auto turns them off",
                "phases": "wall seconds and the peak RSS of edgekit's process tree (sampled every 0.2 s) "
                "per phase: resolve (import or download), reference (reference GGUF and store), imatrix, "
                "builds, scoring, speed",
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
    full: bool = False,
    speed: str = "pick",
    speed_bar: str | None = None,
    auto: bool = True,
) -> RunReport:
    """The main job; its options besides model, target and bar are JobOptions' fields
    (`run_main_job(model, target, bar, **opts.kwargs(), out_dir=..., progress=...)`)."""
    from edgekit.bench import job_speed
    from edgekit.bench.quality import score_state
    from edgekit.bench.reference import reference_store, score_artifact, score_path
    from edgekit.formats import BuildOptions, build, get_format
    from edgekit.models.source import open_checkpoint, peek_entry
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target
    from edgekit.text import default_evaluation_text, read_text_file

    progress = progress or Progress()
    bar = parse_bar(bar_text)  # a malformed bar fails before any work
    sbar = job_speed.parse_speed_bar(speed_bar) if speed_bar else None
    if speed not in ("pick", "all", "none"):
        raise EdgekitError(f"--speed {speed!r}: choose pick, all or none")
    if sbar and speed == "none":
        raise EdgekitError("--speed-bar needs speed figures: drop --speed none")
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
    phases = Phases()
    progress.say(f"resolving {model}")
    with phases("resolve"):
        ck = open_checkpoint(model)
    p = plan(ck.entry, target, ctx=ctx, formats=fmts)
    run_dir = Path(out_dir) / f"{safe_stem(ck.entry.name)}-{safe_stem(target.name)}"
    art_dir = run_dir / "artifacts"
    progress.say("reference: scoring the unquantized model on the evaluation text")
    with phases("reference"):
        store = reference_store(ck, eval_text, progress=progress.windows)
    candidates = [
        Candidate(
            r.format, r.weights_bytes, r.fits, r.to_dict(), kind="auto" if _is_auto(r.format) else "standard"
        )
        for r in p.rows
    ]
    for c in candidates:
        f = get_format(c.format)
        c.blocked = _unbuildable(ck, f)
        c.chain = _chain(f, imatrix)
    ladder = [c for c in candidates if c.fits and not c.blocked]
    if imatrix == "auto" and any("imatrix" in get_format(c.format).impl.options for c in ladder):
        from edgekit.quantize.gguf_build import importance_matrix

        with phases("imatrix"):  # once, before the builds that share it (and timed apart from them)
            importance_matrix(ck, "auto", calibration, progress)
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

    measured_log: list[Candidate] = []  # in the order first measured

    def measure(i: int) -> QualityResult:
        return measure_c(ladder[i])

    def measure_c(c: Candidate) -> QualityResult:
        if c not in measured_log:
            measured_log.append(c)
        progress.say(f"candidate {c.format}")
        fmt = get_format(c.format)
        sub = Progress(stage=progress.stage, tensor=progress.tensor, chunk=progress.chunk)
        opts = BuildOptions(calibration=calibration if fmt.impl.takes_calibration(fmt) else None)
        if "imatrix" in fmt.impl.options:
            opts = replace(opts, imatrix=imatrix)
        with phases("builds"):
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
            with phases("scoring"):
                measure_floor()
        with phases("scoring"):
            q, c.sequential, resumed = _score(art, m.sha256, runtime, tag, complete or full)
        c.quality = q
        c.resumed_windows = max(c.resumed_windows, resumed)
        return q

    def _score(art, sha: str, runtime: str, tag: str, complete: bool):
        """The candidate's quality: every window (`complete`), or until the sequential test
        settles the bar. Scores are sealed cache entries (a damaged one is measured again):
        a complete one serves any bar, a partial one only the bar that stopped it, and the
        per-window values (quality.ScoreState, kept after every window) let any later scoring
        of the same file go on where an earlier one stopped or was interrupted."""
        base = f"{sha[:16]}-{store.key.slug()}{tag}"
        whole = scores_dir / f"{base}.json"
        part = scores_dir / f"{base}-{_bar_slug(bar)}.partial.json"
        state_file = scores_dir / f"{base}.windows.npz"
        with atomic.locked(whole):
            if atomic.intact(whole):
                return QualityResult(**json.loads(whole.read_text())), None, 0
            if not complete and atomic.intact(part):
                d = json.loads(part.read_text())
                # the decision as the interrupted or earlier run left it: its windows not scored again
                seq = {**d["sequential"], "resumed_windows": d["sequential"]["after_windows"]}
                return QualityResult(**d["quality"]), seq, seq["resumed_windows"]
            state = _saved_state(state_file, store)
            resumed = state.windows
            test = None if complete else SequentialTest(bar, store.n_windows)
            if test is not None and resumed:
                state = test.replay(state, store)  # the looks those windows would have had

            def keep(st) -> None:
                st.save(state_file)  # replaced whole; its old seal no longer matches until resealed
                atomic.seal(state_file)

            if test is not None and test.decision is not None:  # settled by the resumed windows
                q = score_state(state, store)
            else:
                q = score_artifact(
                    art,
                    store,
                    runtime=runtime,
                    progress=progress.windows,
                    stop=test.stop if test else None,
                    state=state,
                    on_window=keep,
                )
            if q.complete:
                atomic.write_json(whole, q.to_dict())
                atomic.seal(whole)
                atomic.discard(state_file)  # the whole score holds all it said
                return q, None, resumed
            assert test is not None
            seq = test.to_dict()
            atomic.write_json(part, {"quality": q.to_dict(), "sequential": seq})
            atomic.seal(part)
            return q, {**seq, "resumed_windows": min(resumed, seq["after_windows"])}, resumed

    complete = False  # set once the search is over: the pick is scored on every window

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

    def set_complete(value: bool) -> None:
        nonlocal complete
        complete = value

    chain_of = ladder_chains(ladder)
    outcome = settled_search(ladder, measure, bar, full, set_complete, chain_of=chain_of)
    standard_pick = ladder[outcome.pick] if outcome.pick is not None else None
    # auto rungs: gguf:auto mixes in the gap below the standard pick, a chain of their own
    rungs: list[Candidate] = []
    auto_chains: list[int] = []  # the sizes of the auto chains bisected
    auto_pick: Candidate | None = None

    auto_error = ""
    auto_why = "" if auto else "off (--no-auto)"
    if auto and standard_pick is None:
        auto_why = "no standard candidate meets the bar: no gap below a pick to fill"
    elif auto and standard_pick is not None:
        rungs, auto_why = auto_rungs(ck.entry, target, p.ctx, ladder, standard_pick, imatrix)
        for c in rungs:
            c.blocked = _unbuildable(ck, get_format(c.format))
        rungs = [c for c in rungs if c.fits and not c.blocked]
        if rungs:
            progress.say(
                f"auto rungs below {standard_pick.format}: "
                + ", ".join(c.format.removeprefix(AUTO_PREFIX) for c in rungs)
            )

            try:
                auto_pick = search_auto(rungs, measure_c, bar, full, set_complete)
                auto_chains.append(len(rungs))
                if auto_pick is not None and auto_pick is rungs[0]:
                    # the rung at the ladder's smallest standard size passes: the auto frontier
                    # goes on below it, towards the smallest mix an auto budget reaches
                    lower = floor_rungs(ck.entry, target, p.ctx, rungs[0], imatrix)
                    lower = [c for c in lower if c.fits and not _unbuildable(ck, get_format(c.format))]
                    if lower:
                        progress.say(
                            f"auto rungs below {rungs[0].format}: "
                            + ", ".join(c.format.removeprefix(AUTO_PREFIX) for c in lower)
                        )
                        rungs = lower + rungs
                        auto_chains.append(len(lower))
                        auto_pick = search_auto(lower, measure_c, bar, full, set_complete) or auto_pick
            except EdgekitError as e:  # a failed auto build leaves the standard pick standing
                auto_error = e.one_line()
                auto_pick = None
    allc = sorted(ladder + rungs, key=lambda c: c.planned_bytes)  # every chain, in size order
    candidates = sorted(candidates + rungs, key=lambda c: c.planned_bytes)
    quality_pick = auto_pick or standard_pick
    pick_i = allc.index(quality_pick) if quality_pick is not None else None
    here = job_speed.target_is_here(target)
    settings = job_speed.SpeedSettings(ctx=p.ctx)

    def speed_of(c: Candidate) -> None:
        if c.speed is None and c.artifact is not None:
            if here:
                progress.say(f"speed: {c.format} on this machine")
            with phases("speed"):
                c.speed = job_speed.candidate_speed(
                    c.artifact["path"], c.format, target, c.plan_row, settings, measure=here
                )

    if pick_i is not None and speed != "none":
        speed_of(allc[pick_i])
    if sbar is not None and pick_i is not None:

        def quality_at(i: int) -> QualityResult:
            """Candidate i scored on every window (a larger one than the quality pick)."""
            q = allc[i].quality
            if not _is_complete(q):
                q = measure_c(allc[i])
            assert isinstance(q, QualityResult)
            return q

        def speed_at(i: int):
            speed_of(allc[i])
            return allc[i].speed

        pick_i = speed_pick(pick_i, len(allc), bar, sbar, quality_at, speed_at)
    if speed == "all":
        for c in allc:
            if c.quality is not None:
                speed_of(c)
    pick = allc[pick_i] if pick_i is not None else None
    _explain(candidates, allc, pick, bar, target.name, sbar)
    auto_report = auto_summary(
        auto, auto_why, auto_error, candidates, rungs, standard_pick, pick, bar, measured_log
    )
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
        measured_order=[c.format for c in measured_log],
        run_dir=run_dir,
        notes=[
            f"measured {sum(c in measured_log for c in ladder)} of {len(ladder)} fitting candidates "
            f"(bound of the search over {len(set(map(chain_of, range(len(ladder)))))} chain(s): "
            f"{max_measurements(_chain_sizes(ladder))})"
        ]
        + (
            [
                f"auto rungs: measured {sum(c in measured_log for c in rungs)} of {len(rungs)} "
                f"(bound {max_measurements(auto_chains)})"
            ]
            if rungs
            else []
        )
        + _sequential_note(allc, full)
        + ([ck.note] if ck.note else []),
        phases=phases.to_dict(),
        full=full,
        speed_bar=sbar,
        speed_here=here,
        auto=auto_report,
    )
    if not here and speed != "none":
        report.notes.append(
            job_speed.elsewhere_note(target.name, pick.artifact["path"] if pick and pick.artifact else None)
        )
    from edgekit.bench.report import write_reports

    write_reports(report)
    return report


def speed_pick(
    pick: int,
    n: int,
    bar: Bar,
    sbar,
    quality: Callable[[int], QualityResult],
    speed: Callable[[int], Any],
) -> int | None:
    """The pick under both bars: of candidates 0..n-1 in size order, smallest first, where
    `pick` is the smallest that meets the quality bar, the smallest from `pick` up that meets
    both `bar` and the speed bar `sbar` (job_speed.SpeedBar), or None. Figures are asked for
    lazily, in size order, only as far as the answer needs: `quality(i)` for each candidate
    above the pick, `speed(i)` (job_speed.SpeedFigures) for the pick and for each that meets
    the quality bar."""
    for i in range(pick, n):
        if i > pick and not bar.passes(quality(i)):
            continue
        if sbar.passes(speed(i)):
            return i
    return None


def _explain(
    candidates: list[Candidate],
    ladder: list[Candidate],
    pick: Candidate | None,
    bar: Bar,
    target: str,
    sbar=None,
):
    def gib(n: float) -> str:
        return f"{n / 1024**3:.2f} GiB"

    failed = [c for c in ladder if c.quality and not bar.passes(c.quality)]
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
            if sbar is not None:
                c.reason += f" and {sbar.text} ({sbar.observed(c.speed)})"
        elif c.quality is not None:
            if (
                bar.passes(c.quality)
                and sbar is not None
                and c.speed is not None
                and not sbar.passes(c.speed)
            ):
                c.status, c.reason = "too slow", sbar.reason(c.speed)
            elif bar.passes(c.quality):
                c.status, c.reason = (
                    "passes",
                    f"meets {bar.text} ({_observed(bar, c.quality)}) but is larger than the pick",
                )
            else:
                c.status, c.reason = "below the bar", f"{_observed(bar, c.quality)} misses {bar.text}"
        elif pick is not None and c.planned_bytes > pick.planned_bytes:
            c.status, c.reason = "not built", "larger than the pick"
        elif above := [f for f in failed if f.chain == c.chain and f.planned_bytes >= c.planned_bytes]:
            c.status, c.reason = (
                "not built",
                f"smaller than {min(above, key=lambda f: f.planned_bytes).format}, which missed the bar: "
                f"assumes quality falls with size within {c.chain}",
            )
        else:
            c.status, c.reason = "not built", "not needed by the search"


def rung_points(below: list[float], top: float) -> list[float]:
    """Where the auto rungs go, in bits per weight, smallest first: at each standard size of
    `below` (the ladder's GGUF types smaller than the pick, whose size is `top`) and midway
    between each and the next one up (the last midway to `top`); sizes within 1 % of one
    already placed, or of `top`, add nothing."""
    sizes: list[float] = []
    for x in sorted(below):
        if x < top * 0.99 and not (sizes and x < sizes[-1] * 1.01):
            sizes.append(x)
    points: list[float] = []
    for j, x in enumerate(sizes):
        up = sizes[j + 1] if j + 1 < len(sizes) else top
        for y in (x, (x + up) / 2):
            if y < top * 0.99 and not (points and y < points[-1] * 1.01):
                points.append(y)
    return points


def auto_rungs(entry, target, ctx: int, ladder: list[Candidate], pick: Candidate, imatrix: str):
    """The gguf:auto rungs below the standard pick (rung_points at the bits per weight the
    planner gives the ladder's standard GGUF types), each planned like any candidate; and,
    when there are none, why."""
    from edgekit.formats import get_format
    from edgekit.plan import plan

    gguf = get_format("gguf:Q4_K_M")
    chain = _chain(gguf, imatrix)
    below = [
        float(c.plan_row["bits_per_weight"])
        for c in ladder
        if c.kind == "standard"
        and c.chain == chain
        and c.planned_bytes < pick.planned_bytes
        and c.plan_row.get("bits_per_weight")
    ]
    if not below:
        return [], f"no standard GGUF type of the ladder is smaller than {pick.format}: no gap to fill"
    top = float(pick.plan_row.get("bits_per_weight") or 0) or max(below) * 1.02
    have = {c.format for c in ladder}
    out: list[Candidate] = []
    unreachable = ""
    for bpw in rung_points(below, top):
        spec = f"{AUTO_PREFIX}{math.floor(bpw * 1e4) / 1e4:.4f}bpw"
        try:
            fmt = get_format(spec)
            if fmt.id in have:  # named in --formats: already on the ladder
                continue
            row = plan(entry, target, ctx=ctx, formats=[fmt]).rows[0]
        except EdgekitError as e:  # below what any mix reaches
            unreachable = e.one_line()
            continue
        have.add(fmt.id)
        c = Candidate(fmt.id, row.weights_bytes, row.fits, row.to_dict(), kind="auto")
        c.chain = _chain(fmt, imatrix)
        out.append(c)
    return out, "" if out else (unreachable or "every auto rung would be within 1 % of the pick")


def settled_search(items: list[Candidate], measure, bar: Bar, full: bool, set_complete, chain_of=None):
    """The search over `items` (in size order; `measure(i)` scores item i): bisected with the
    sequential test (with `full`, every item on every window first), then the pick scored on
    every window; should that reverse the sequential decision (at most alpha of the time), the
    search goes on with the full result in hand. `set_complete(flag)` tells `measure` whether
    to score every window; it is left True."""
    set_complete(False)
    try:
        done: dict[int, object] = {i: measure(i) for i in range(len(items))} if full else {}
        a = search(items, measure, bar, chain_of=chain_of, measured=done)
        set_complete(True)
        while a.pick is not None and not _is_complete(items[a.pick].quality):
            a.measured[a.pick] = measure(a.pick)
            a = search(items, measure, bar, chain_of=chain_of, measured=a.measured)
    finally:
        set_complete(True)
    return a


def search_auto(rungs: list[Candidate], measure, bar: Bar, full: bool, set_complete) -> Candidate | None:
    """The smallest of `rungs` (one chain, in size order) that meets the bar, scored on every
    window (settled_search; `measure` takes a candidate)."""
    a = settled_search(rungs, lambda i: measure(rungs[i]), bar, full, set_complete)
    return rungs[a.pick] if a.pick is not None else None


def auto_floor_bpw(arch) -> float | None:
    """The bits per weight of the smallest mix an auto budget reaches (every quantizable tensor
    at the first type of its ladder), or None when gguf_auto cannot say."""
    try:
        from edgekit.quantize.gguf_auto import Sizes, ladder

        sizes = Sizes(arch.tensors())
        return float(sizes.measure({t.name: ladder(t)[0] for t in sizes.q})[1])
    except (ImportError, AttributeError, TypeError, KeyError, IndexError):
        return None


def floor_rungs(entry, target, ctx: int, lowest: Candidate, imatrix: str) -> list[Candidate]:
    """Auto rungs below `lowest` (the auto rung at the ladder's smallest standard size): at the
    smallest mix an auto budget reaches and a third and two thirds of the way from it up to
    `lowest`, each planned like any candidate (a point within 1 % of `lowest` or of the one
    before it adds nothing)."""
    from edgekit.formats import get_format
    from edgekit.plan import plan

    floor = auto_floor_bpw(entry.arch)
    top = float(lowest.plan_row.get("bits_per_weight") or 0)
    if floor is None or not top or floor >= top * 0.99:
        return []
    points = [math.ceil(floor * 1e4) / 1e4] + [
        math.floor((floor + (top - floor) * k / 3) * 1e4) / 1e4 for k in (1, 2)
    ]
    out: list[Candidate] = []
    last = 0.0
    for bpw in points:
        if bpw >= top * 0.99 or (last and bpw < last * 1.01):
            continue
        try:
            fmt = get_format(f"{AUTO_PREFIX}{bpw:.4f}bpw")
            row = plan(entry, target, ctx=ctx, formats=[fmt]).rows[0]
        except EdgekitError:  # the floor rounded past what a mix reaches
            continue
        last = bpw
        c = Candidate(fmt.id, row.weights_bytes, row.fits, row.to_dict(), kind="auto")
        c.chain = _chain(fmt, imatrix)
        out.append(c)
    return out


def _row(c: Candidate, bar: Bar) -> dict:
    q, a = c.quality, c.artifact
    return {
        "format": c.format,
        "planned_bytes": c.planned_bytes,
        "size_bytes": a["size_bytes"] if a else None,
        "bits_per_weight": a["bits_per_weight"] if a else c.plan_row.get("bits_per_weight"),
        "kld_mean": q.kld_mean if q else None,
        "kld_stderr": q.kld_stderr if q else None,
        "passes": bar.passes(q) if q else None,
        "status": c.status,
    }


def auto_summary(
    enabled: bool,
    why: str,
    error: str,
    candidates: list[Candidate],
    rungs: list[Candidate],
    standard_pick: Candidate | None,
    pick: Candidate | None,
    bar: Bar,
    measured: list[Candidate],
) -> dict:
    """report.json's `auto`: whether the rungs were on, the standard and the auto frontier side
    by side (every fitting candidate of each kind: size, KLD, pass/fail, status), and what the
    pick saves against the smallest standard type that meets the bar (`saving_bytes`,
    `saving_pct`: file sizes on disk; 0 when the pick is not an auto mix)."""
    fitting = [c for c in candidates if c.fits and not c.blocked]
    saving, pct = 0, 0.0
    std = standard_pick
    if pick is not None and pick.kind == "auto" and std is not None and std.artifact and pick.artifact:
        saving = int(std.artifact["size_bytes"]) - int(pick.artifact["size_bytes"])
        pct = round(100 * saving / int(std.artifact["size_bytes"]), 2)
        summary = (
            f"auto rungs: the pick {pick.format} is {saving:,} bytes ({pct:.1f} %) smaller than "
            f"{std.format}, the smallest standard type that meets {bar.text}"
        )
    elif not enabled:
        summary = "auto rungs off (--no-auto)"
    elif std is None:
        summary = f"auto rungs did not run: {why}"
    elif error:
        summary = f"auto rungs did not beat {std.format}: an auto build failed ({error})"
    elif not rungs:
        summary = f"auto rungs did not beat {std.format}: {why}"
    elif passing := [c for c in rungs if c.quality is not None and bar.passes(c.quality)]:
        summary = (
            f"auto rungs did not beat {std.format}: {passing[0].format} meets {bar.text} but not the "
            f"speed bar; the pick is {pick.format if pick else 'none'}"
        )
    else:
        tried = [c for c in rungs if c in measured]
        summary = (
            f"auto rungs did not beat {std.format}: "
            + ", ".join(c.format for c in tried)
            + f" missed {bar.text}"
            if tried
            else f"auto rungs did not beat {std.format}"
        )
    return {
        "enabled": enabled,
        "rungs": [c.format for c in rungs],
        "measured": [c.format for c in rungs if c in measured],
        "why_none": None if rungs else (why or None),
        "error": error or None,
        "standard_pick": std.format if std else None,
        "standard_pick_bytes": std.artifact["size_bytes"] if std and std.artifact else None,
        "pick": pick.format if pick else None,
        "pick_bytes": pick.artifact["size_bytes"] if pick and pick.artifact else None,
        "pick_is_auto": bool(pick is not None and pick.kind == "auto"),
        "saving_bytes": saving,
        "saving_pct": pct,
        "summary": summary,
        "frontier": {
            "standard": [_row(c, bar) for c in fitting if c.kind == "standard"],
            "auto": [_row(c, bar) for c in fitting if c.kind == "auto"],
        },
    }


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


def _chain(fmt, imatrix: str) -> str:
    """The chain a candidate is bisected in: its format family, and for a family that takes an
    importance matrix, the setting (quality is monotone in size at best within one)."""
    if "imatrix" not in fmt.impl.options:
        return fmt.family
    family = f"{fmt.family}:auto" if _is_auto(fmt.id) else fmt.family  # better at one size: its own
    return f"{family} ({'no importance matrix' if imatrix == 'none' else 'importance matrix'})"


def ladder_chains(ladder: list[Candidate]):
    chains = [c.chain for c in ladder]
    return lambda i: chains[i]


def _chain_sizes(ladder: list[Candidate]) -> list[int]:
    sizes: dict[str, int] = {}
    for c in ladder:
        sizes[c.chain] = sizes.get(c.chain, 0) + 1
    return list(sizes.values())


def _saved_state(path: Path, store):
    """The per-window values an earlier scoring left at `path`, or an empty state when there
    are none or they are damaged or do not fit the store."""
    from edgekit.bench.quality import ScoreState

    if atomic.intact(path):
        try:
            return ScoreState.load(path, store)
        except (EdgekitError, OSError, ValueError, KeyError):
            pass
    return ScoreState()


def _is_complete(q: object) -> bool:
    return isinstance(q, QualityResult) and q.complete


def _bar_slug(bar: Bar) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(bar.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _sequential_note(ladder: list[Candidate], full: bool) -> list[str]:
    if full:
        return ["--full: every fitting candidate measured on every window"]
    early = [(c.format, c.sequential) for c in ladder if c.sequential]
    if not early:
        return []
    parts = ", ".join(f"{f} after {s['after_windows']} of {s['of_windows']}" for f, s in early)
    return [f"decided early by the sequential test: {parts} windows"]


class Phases:
    """Wall seconds and peak RSS (edgekit's process tree) per phase of the job; a phase entered
    several times (builds, scoring) adds up its seconds and keeps its largest peak."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str):
        from edgekit.bench.memory import MemorySampler

        sampler = MemorySampler(tree=True).start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            sampler.stop()
            self.peak[name] = max(self.peak.get(name, 0), sampler.peak_rss)

    def to_dict(self) -> dict:
        return {
            k: {"seconds": round(v, 2), "peak_rss_bytes": self.peak.get(k, 0)}
            for k, v in self.seconds.items()
        }
