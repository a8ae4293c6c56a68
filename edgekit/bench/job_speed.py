"""Speed and memory of a main-job candidate: measured on this machine when the target is this
machine, planned (the planner's roofline) when it is another device, and a speed bar.

Measured figures come from the one benchmark of `edgekit bench` (edgekit.bench.speed.bench: a
child process per measurement through the runtime registry), at a short, fixed setting
(`SpeedSettings`: a 128-token prompt, 32 generated tokens, 1 warmup + 2 repeats, 2 threads,
batch 1), and are cached per artifact sha256 x settings x host x runtime version in a sealed
JSON, so a re-run costs nothing. Every figure carries its source ("measured" or "planned") and
the planner's counterpart beside it (the candidate's plan row, edgekit.plan.PlanRow.to_dict()).

A candidate planned for another device is measured there later: `edgekit bench ARTIFACT` on
that device, `edgekit bench import` of its store here; then a re-run of the job finds that run
in the store (stored_run), and `fill_report(RUN_DIR)` puts the figures into an existing run's
report.json without re-running it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__, atomic
from edgekit.artifact import artifact_sha256, artifact_size, load_artifact
from edgekit.bench import device as devmod
from edgekit.bench import results_store
from edgekit.bench.results import METHOD as BENCH_METHOD
from edgekit.bench.results import Settings
from edgekit.bench.speed import bench
from edgekit.bench.subject import Subject, choose_runtime
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir
from edgekit.profiles.target import Target, get_target

SCHEMA = "edgekit.job_speed/1"
SPEED_KEY = "speed"  # where a candidate's figures sit in report.json's candidates[*]
FIGURES = ("prefill_tok_s", "decode_tok_s", "ttft_s", "peak_memory_bytes", "roofline_share")

METHOD = {
    "setting": "edgekit bench's own measurement (one child process through the runtime registry) at a "
    "short fixed setting: prompt, generated tokens, warmup and repeats, threads and context as in "
    "`settings`; batch 1; figures are medians over the repeats",
    "prefill_tok_s": BENCH_METHOD["prefill_tok_s"],
    "decode_tok_s": BENCH_METHOD["decode_tok_s"],
    "ttft_s": BENCH_METHOD["ttft"],
    "peak_memory_bytes": "peak RSS of the measuring process on a CPU (" + BENCH_METHOD["peak_rss"] + "); "
    "peak VRAM on a GPU (" + BENCH_METHOD["peak_vram"] + ")",
    "roofline_share": BENCH_METHOD["roofline"],
    "planned": "the candidate's plan row (edgekit.plan): decode = the bandwidth roofline with the KV "
    "cache at the job's context, prefill = the compute roof at the plan's prompt length (both upper "
    "bounds), TTFT = prompt tokens / planned prefill (a lower bound), peak memory = weights + KV cache "
    "at the job's context + runtime overhead, per device; a roofline share needs a measurement",
    "cache": "measured figures are cached per artifact sha256 x settings x host fingerprint x runtime "
    "version x device, sealed (a damaged entry is measured again)",
}


# ---- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeedSettings:
    """The short, fixed benchmark of a candidate. `ctx` is the context allocated (None: prompt +
    generated tokens); pass the job's context to measure peak memory at the context planned."""

    prompt_tokens: int = 128
    gen_tokens: int = 32
    repeats: int = 2
    warmup: int = 1
    threads: int | None = 2
    ctx: int | None = None
    timeout_s: float | None = 1800.0

    def bench_settings(self, device: str) -> Settings:
        s = Settings(
            prompt_tokens=self.prompt_tokens,
            gen_tokens=self.gen_tokens,
            batches=(1,),
            repeats=self.repeats,
            warmup=self.warmup,
            threads=self.threads,
            device=device,
            n_ctx=self.ctx,
            timeout_s=self.timeout_s,
        )
        s.check()
        return s

    def key(self) -> str:
        return (
            f"p{self.prompt_tokens}-g{self.gen_tokens}-r{self.repeats}-w{self.warmup}-"
            f"t{self.threads or 'all'}-c{self.ctx or self.prompt_tokens + self.gen_tokens}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "batch": 1, "n_ctx": self.ctx or self.prompt_tokens + self.gen_tokens}


# ---- figures ------------------------------------------------------------------------------


def _num(x: Any, digits: int | None) -> float | int | None:
    """A finite number rounded for JSON, or None (never NaN or infinity): `digits` decimals, or
    -N for N significant digits, or None for an integer."""
    if x is None or isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    if digits is None:
        return int(x)
    if digits < 0:
        return float(f"{float(x):.{-digits}g}")
    return round(float(x), digits)


# TTFT in significant digits: a planned one on a GPU is tens of microseconds
_DIGITS = {
    "prefill_tok_s": 2,
    "decode_tok_s": 2,
    "ttft_s": -6,
    "peak_memory_bytes": None,
    "roofline_share": 4,
}
_UNITS = {
    "prefill_tok_s": "tok/s",
    "decode_tok_s": "tok/s",
    "ttft_s": "s",
    "peak_memory_bytes": "bytes",
    "roofline_share": "fraction",
}


@dataclass(frozen=True)
class Figure:
    """One speed or memory figure: the measured value (None when not measured), the planner's
    (None where the planner has none) and how the planned one was had."""

    name: str
    measured: float | int | None
    planned: float | int | None
    planned_basis: str
    spread: tuple[float, float] | None = None  # min and max over the repeats
    extra: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return "measured" if self.measured is not None else "planned"

    @property
    def value(self) -> float | int | None:
        return self.measured if self.measured is not None else self.planned

    def to_dict(self) -> dict:
        d = _DIGITS[self.name]
        return {
            "value": _num(self.value, d),
            "source": self.source,
            "unit": _UNITS[self.name],
            "measured": _num(self.measured, d),
            "planned": _num(self.planned, d),
            "planned_basis": self.planned_basis,
            "min": _num(self.spread[0], d) if self.spread else None,
            "max": _num(self.spread[1], d) if self.spread else None,
            **self.extra,
        }


@dataclass
class SpeedFigures:
    format: str
    target: str
    here: bool  # the target is this machine (figures measured here, or measurement failed)
    prefill_tok_s: Figure
    decode_tok_s: Figure
    ttft_s: Figure
    peak_memory_bytes: Figure
    roofline_share: Figure
    settings: dict
    measured_on: dict | None = None  # host, device, runtime, bench run id of the measurement
    cache: str = "none"  # hit | miss (measured here) | store (a run imported from the device) | none
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.decode_tok_s.measured is not None

    def figure(self, name: str) -> Figure:
        if name not in FIGURES:
            raise KeyError(name)
        fig: Figure = getattr(self, name)
        return fig

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "format": self.format,
            "target": self.target,
            "here": self.here,
            "measured": self.measured,
            **{name: self.figure(name).to_dict() for name in FIGURES},
            "settings": self.settings,
            "measured_on": self.measured_on,
            "cache": self.cache,
            "notes": list(self.notes),
            "method": METHOD,
        }


def _positive(x: Any) -> float | None:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0
    return float(x) if ok else None


def _planned(plan_row: dict | None, settings: SpeedSettings) -> dict[str, tuple[float | None, str]]:
    """The planner's figures from a plan row (PlanRow.to_dict()), each with its basis."""
    row = plan_row or {}
    dec = _positive(row.get("decode_tok_s"))
    pre = _positive(row.get("prefill_tok_s"))
    peak = _positive((row.get("per_device") or {}).get("total"))
    why_none = "no plan row" if not row else "the planner gave none"
    return {
        "prefill_tok_s": (
            pre,
            "planner's compute roof at the plan's prompt length (an upper bound)" if pre else why_none,
        ),
        "decode_tok_s": (
            dec,
            "planner's bandwidth roofline, KV cache at the job's context (an upper bound)"
            if dec
            else why_none,
        ),
        "ttft_s": (
            settings.prompt_tokens / pre if pre else None,
            f"{settings.prompt_tokens} prompt tokens / planned prefill (a lower bound)" if pre else why_none,
        ),
        "peak_memory_bytes": (
            peak,
            "planner's weights + KV cache at the job's context + runtime overhead, per device"
            if peak
            else why_none,
        ),
        "roofline_share": (None, "a share of the roofline needs a measurement"),
    }


def _figures(
    fmt_id: str,
    target_name: str,
    here: bool,
    figs: dict[str, Figure],
    settings: SpeedSettings,
    notes: Sequence[str],
    measured_on: dict | None = None,
    cache: str = "none",
) -> SpeedFigures:
    return SpeedFigures(
        format=fmt_id,
        target=target_name,
        here=here,
        prefill_tok_s=figs["prefill_tok_s"],
        decode_tok_s=figs["decode_tok_s"],
        ttft_s=figs["ttft_s"],
        peak_memory_bytes=figs["peak_memory_bytes"],
        roofline_share=figs["roofline_share"],
        settings=settings.to_dict(),
        measured_on=measured_on,
        cache=cache,
        notes=list(notes),
    )


def planned_figures(
    fmt_id: str,
    target_name: str,
    plan_row: dict | None,
    settings: SpeedSettings | None = None,
    here: bool = False,
    notes: Sequence[str] = (),
) -> SpeedFigures:
    """Figures from the plan row only: every one marked "planned"."""
    settings = settings or SpeedSettings()
    p = _planned(plan_row, settings)
    figs = {name: Figure(name, None, p[name][0], p[name][1]) for name in FIGURES}
    return _figures(fmt_id, target_name, here, figs, settings, notes)


def figures_from_run(
    run: dict,
    fmt_id: str,
    target_name: str,
    plan_row: dict | None,
    settings: SpeedSettings | None = None,
    here: bool = True,
    cache: str = "none",
) -> SpeedFigures:
    """Figures from a stored bench run (edgekit.bench/1, BenchResult.to_dict()) beside the plan
    row's: the same path for a measurement made now and for one imported from another device."""
    st = run.get("settings") or {}
    settings = settings or SpeedSettings(
        prompt_tokens=int(st.get("prompt_tokens") or 128),
        gen_tokens=int(st.get("gen_tokens") or 32),
        repeats=int(st.get("repeats") or 1),
        warmup=int(st.get("warmup") or 0),
        threads=st.get("threads"),
        ctx=st.get("n_ctx"),
    )
    b = next((x for x in run.get("batches") or [] if x.get("batch") == 1), None)
    if b is None or not b.get("measured"):
        why = (b or {}).get("reason") or "batch 1 was not measured"
        return planned_figures(fmt_id, target_name, plan_row, settings, here, [f"not measured: {why}"])
    p = _planned(plan_row, settings)

    def stat(key: str) -> tuple[float | None, tuple[float, float] | None]:
        s = b.get(key) or {}
        med, lo, hi = s.get("median"), s.get("min"), s.get("max")
        spread = (lo, hi) if lo is not None and hi is not None else None
        return med, spread

    device = run.get("device") or "cpu"
    peak = run.get("peak_vram_bytes") if device == "cuda" else run.get("peak_rss_bytes")
    planner = run.get("planner") or {}
    roof = b.get("roofline") or {}
    figs = {}
    for name, key in (
        ("prefill_tok_s", "prefill_tok_s"),
        ("decode_tok_s", "decode_tok_s"),
        ("ttft_s", "ttft_s"),
    ):
        med, spread = stat(key)
        extra = {}
        if name == "decode_tok_s" and roof.get("bound_tok_s") is not None:
            extra = {"bound_tok_s_at_measured_ctx": roof["bound_tok_s"], "kv_context": roof.get("kv_context")}
        figs[name] = Figure(name, med, p[name][0], p[name][1], spread, extra)
    figs["peak_memory_bytes"] = Figure(
        "peak_memory_bytes",
        peak,
        p["peak_memory_bytes"][0],
        p["peak_memory_bytes"][1],
        extra={
            "what": "peak VRAM" if device == "cuda" else "peak RSS",
            "measured_ctx": (run.get("settings") or {}).get("n_ctx"),
            "planned_at_measured_ctx": planner.get("predicted_peak_bytes"),
        },
    )
    figs["roofline_share"] = Figure(
        "roofline_share",
        roof.get("fraction"),
        None,
        p["roofline_share"][1],
        extra={"bandwidth_gbs": roof.get("bandwidth_gbs")},
    )
    host = run.get("host") or {}
    notes = [n for n in run.get("notes") or [] if not n.startswith("saved to ")]
    subject_fmt = (run.get("subject") or {}).get("format")
    if subject_fmt and subject_fmt != fmt_id:
        notes.append(f"the measured artifact is {subject_fmt}, the candidate {fmt_id}")
    return _figures(
        fmt_id,
        target_name,
        here,
        figs,
        settings,
        notes,
        measured_on={
            "host": host.get("label"),
            "fingerprint": host.get("fingerprint"),
            "device": device,
            "device_name": results_store.device_label(run),
            "runtime": (run.get("runtime") or {}).get("name"),
            "runtime_version": (run.get("runtime") or {}).get("version"),
            "bench_run": run.get("id"),
            "created": run.get("created"),
            "foreign_cpu_share": run.get("foreign_cpu_share"),
        },
        cache=cache,
    )


# ---- where the target is ------------------------------------------------------------------


def _target(target: Target | str) -> Target:
    return get_target(target) if isinstance(target, str) else target


def target_is_here(target: Target | str, host: devmod.HostInfo | None = None) -> bool:
    """Whether `target` is this machine: the `cpu` target (detected here), or a GPU target whose
    profile the GPUs NVML finds here match (as many of them as the target counts). A CPU target
    from a TOML file other than `cpu` describes another machine."""
    t = _target(target)
    d = t.device
    if d.kind == "cpu":
        return d.name == "cpu" or d.source == "detected"
    host = host or devmod.detect()
    return sum(1 for g in host.gpus if g.profile == d.name) >= t.count


def elsewhere_note(target_name: str, artifact: str | Path | None = None) -> str:
    what = str(artifact) if artifact else "ARTIFACT"
    return (
        f"speed and memory are planned (roofline) for {target_name}, which is not this machine: run "
        f"`edgekit bench {what}` (with its manifest beside it) on the {target_name}, bring its results "
        "store here with `edgekit bench import DIR`, and re-run this job: everything else comes from "
        "the cache, and the figures measured there replace the planned ones"
    )


# ---- measuring a candidate ----------------------------------------------------------------


def _artifact_sha256(path: Path) -> str:
    """The manifest's sha256 (no re-hashing), or the bytes' for a bare file."""
    art = load_artifact(path)
    if art is not None and art.manifest.sha256:
        return art.manifest.sha256
    if not path.exists():
        raise EdgekitError(f"{path}: no such file or directory")
    return artifact_sha256(path)


def speed_cache_dir(cache: Path | str | None = None) -> Path:
    return Path(cache).expanduser() if cache else cache_dir() / "speed"


def candidate_speed(
    artifact_path: Path | str,
    fmt_id: str,
    target: Target | str,
    plan_row: dict | None,
    settings: SpeedSettings | None = None,
    measure: bool = True,
    *,
    store: Path | None = None,
    cache: Path | str | None = None,
    label: str | None = None,
    host: devmod.HostInfo | None = None,
) -> SpeedFigures:
    """Speed and memory of one candidate. On this machine (target_is_here) and with `measure`:
    measured by `edgekit bench` at `settings` (the result is also saved in the bench results
    store `store`), or read from the cache (`cache`, default <edgekit cache>/speed); otherwise
    planned from `plan_row`. A measurement that fails leaves planned figures and a note saying
    why: the job goes on."""
    t = _target(target)
    settings = settings or SpeedSettings()
    device = "cuda" if t.device.kind == "gpu" else "cpu"
    bench_settings = settings.bench_settings(device)  # malformed settings fail here, one line
    if not measure:
        return planned_figures(
            fmt_id,
            t.name,
            plan_row,
            settings,
            notes=["not measured: speed and memory are planned (roofline)"],
        )
    if device == "cuda":
        host = host or devmod.detect(label)
    if not target_is_here(t, host):
        found = stored_run(artifact_path, t, store)
        if found is not None:  # measured there and brought here by `edgekit bench import`
            figs = figures_from_run(found[0], fmt_id, t.name, plan_row, here=False, cache="store")
            figs.notes.append(f"measured on {results_store.device_label(found[0])} (bench results store)")
            return figs
        return planned_figures(
            fmt_id, t.name, plan_row, settings, notes=[elsewhere_note(t.name, artifact_path)]
        )
    path = Path(artifact_path).expanduser()
    notes = []
    try:
        host = host or devmod.detect(label, nvml=False)
        entry, key, runtime = cache_entry(path, fmt_id, device, settings, host, cache)
        with atomic.locked(entry):
            if atomic.intact(entry):
                run = json.loads(entry.read_text())["run"]
                state = "hit"
            else:
                result = bench(str(path), runtime=runtime, settings=bench_settings, label=label, store=store)
                run = result.to_dict()
                state = "miss"
                try:
                    atomic.write_json(entry, {"schema": SCHEMA, "key": key, "run": run})
                    atomic.seal(entry)
                except OSError as e:  # the figures stand; the next run measures again
                    notes.append(f"not cached: {e.strerror or e} ({e.filename})")
    except EdgekitError as e:
        return planned_figures(
            fmt_id, t.name, plan_row, settings, here=True, notes=[f"not measured: {e.one_line()}"]
        )
    figs = figures_from_run(run, fmt_id, t.name, plan_row, settings, here=True, cache=state)
    figs.measured_on = {**(figs.measured_on or {}), "cache_entry": str(entry)}
    figs.notes.extend(notes)
    return figs


def stored_run(
    artifact_path: Path | str, target: Target | str, store: Path | str | None = None
) -> tuple[dict, str] | None:
    """(the latest run in the bench results store that measured this artifact on `target`, how
    it matched), or None: how a candidate planned for another device gets that device's figures
    once `edgekit bench` ran there and `edgekit bench import` brought its store here."""
    t = _target(target)
    path = Path(artifact_path).expanduser()
    if not path.exists():
        return None
    art = {"sha256": _artifact_sha256(path), "path": str(path), "size_bytes": artifact_size(path)}
    runs, _ = results_store.load_runs(store)
    here = devmod.detect().fingerprint if t.name == "cpu" else None
    found = [
        (r, how) for r in runs if (how := _same_artifact(r, art)) and run_matches_target(r, t.to_dict(), here)
    ]
    return found[-1] if found else None


def cache_entry(
    path: Path,
    fmt_id: str,
    device: str,
    settings: SpeedSettings,
    host: devmod.HostInfo,
    cache: Path | str | None = None,
) -> tuple[Path, dict, str]:
    """(the sealed JSON holding the measurement, its key, the runtime that measures it): keyed
    by the artifact's sha256 (its manifest's; a bare file is hashed), the settings, the host's
    fingerprint, the device and the runtime with its version."""
    sha = _artifact_sha256(path)
    info = choose_runtime(Subject(path, "artifact", fmt_id, None, 0), None, device, host)
    key = {
        "artifact_sha256": sha,
        "settings": settings.key(),
        "host": host.fingerprint,
        "device": device,
        "runtime": info.name,
        "runtime_version": info.version,
        "edgekit": __version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return speed_cache_dir(cache) / f"{sha[:16]}-{digest}.json", key, info.name


# ---- the speed bar ------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"^\s*(decode|prefill|ttft)\s*(<=|>=|<|>)\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?)\s*(ms|s|tok/s|t/s)?\s*$",
    re.IGNORECASE,
)
_LABEL = {"decode": "decode", "prefill": "prefill", "ttft": "TTFT"}
_FIG = {"decode": "decode_tok_s", "prefill": "prefill_tok_s", "ttft": "ttft_s"}
_HINT = "use e.g. 'decode>=40', 'prefill>=200', 'ttft<=0.5' or 'ttft<=500ms', several joined by commas"


@dataclass(frozen=True)
class SpeedClause:
    metric: str  # decode | prefill (tok/s, lower bounds) | ttft (seconds, an upper bound)
    op: str
    value: float
    text: str

    def observed(self, figs: SpeedFigures) -> tuple[float | None, str]:
        """(value, source) the clause is judged on: measured where measured, else planned."""
        f = figs.figure(_FIG[self.metric])
        return f.value, f.source

    def passes(self, figs: SpeedFigures) -> bool:
        x, _ = self.observed(figs)
        if x is None:
            return False
        return {"<=": x <= self.value, "<": x < self.value, ">=": x >= self.value, ">": x > self.value}[
            self.op
        ]

    def describe(self, figs: SpeedFigures) -> str:
        x, source = self.observed(figs)
        if x is None:
            return f"{_LABEL[self.metric]} unknown (neither measured nor planned)"
        shown = f"{x:.3f} s" if self.metric == "ttft" else f"{x:,.1f} tok/s"
        return f"{_LABEL[self.metric]} {shown} ({source})"

    def to_dict(self) -> dict:
        unit = "s" if self.metric == "ttft" else "tok/s"
        return {"text": self.text, "metric": self.metric, "op": self.op, "value": self.value, "unit": unit}


@dataclass(frozen=True)
class SpeedBar:
    clauses: tuple[SpeedClause, ...]
    text: str

    def passes(self, figs: SpeedFigures) -> bool:
        return all(c.passes(figs) for c in self.clauses)

    def observed(self, figs: SpeedFigures) -> str:
        """What the bar is judged on, each figure with its source: 'decode 52.3 tok/s (measured)'."""
        return ", ".join(c.describe(figs) for c in self.clauses)

    def judged_on(self, figs: SpeedFigures) -> dict[str, str]:
        return {c.metric: c.observed(figs)[1] for c in self.clauses}

    def reason(self, figs: SpeedFigures) -> str:
        """One line: which clauses it misses with their observed values, or that it meets them;
        a judgement on planned figures says so."""
        missed = [c for c in self.clauses if not c.passes(figs)]
        planned = any(c.observed(figs)[1] == "planned" for c in self.clauses)
        tail = " (judged on planned figures: not measured on the device)" if planned else ""
        if missed:
            return "; ".join(f"{c.describe(figs)} misses {c.text}" for c in missed) + tail
        return f"{self.observed(figs)} meets {self.text}{tail}"

    def to_dict(self) -> dict:
        return {"text": self.text, "clauses": [c.to_dict() for c in self.clauses]}


def parse_speed_bar(text: str) -> SpeedBar:
    """`decode>=40`, `prefill>=200`, `ttft<=0.5` (seconds) or `ttft<=500ms`, several joined by
    commas; a one-line EdgekitError for anything else."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise EdgekitError("empty speed bar", _HINT)
    clauses: list[SpeedClause] = []
    for part in parts:
        m = _CLAUSE.match(part)
        if not m:
            raise EdgekitError(f"malformed speed bar {part!r}", _HINT)
        metric, op, num, unit = m.group(1).lower(), m.group(2), float(m.group(3)), (m.group(4) or "").lower()
        if metric == "ttft":
            if op not in ("<=", "<"):
                raise EdgekitError(f"speed bar {part!r}: TTFT takes an upper bound (ttft<=0.5)")
            if unit not in ("", "s", "ms"):
                raise EdgekitError(f"speed bar {part!r}: TTFT is in seconds or ms (ttft<=500ms)")
            value = num / 1000 if unit == "ms" else num
        else:
            if op not in (">=", ">"):
                raise EdgekitError(f"speed bar {part!r}: {metric} speed takes a lower bound ({metric}>=40)")
            if unit not in ("", "tok/s", "t/s"):
                raise EdgekitError(f"speed bar {part!r}: {metric} speed is in tokens per second")
            value = num
        if not (math.isfinite(value) and value > 0):
            raise EdgekitError(f"speed bar {part!r}: the bound must be a positive number")
        if any(c.metric == metric for c in clauses):
            raise EdgekitError(f"speed bar {text.strip()!r}: {metric} is bounded twice")
        clauses.append(SpeedClause(metric, op, value, part))
    return SpeedBar(tuple(clauses), ", ".join(c.text for c in clauses))


# ---- measured on another device: into the run's report ------------------------------------


def _gpu_profile(g: dict) -> str | None:
    return g.get("profile") or devmod.match_profile(str(g.get("name") or ""))


def run_matches_target(run: dict, target: dict, here_fingerprint: str | None = None) -> bool:
    """Whether a stored bench run was measured on the report's target (Target.to_dict()): a GPU
    target on a host with that many GPUs of its profile, on CUDA; a CPU target on the CPU of a
    host labelled with the target's name (`edgekit bench --label NAME`), or here for `cpu`."""
    name, count = str(target.get("name") or ""), int(target.get("count") or 1)
    host = run.get("host") or {}
    if target.get("kind") == "gpu":
        dev = re.sub(r"^\d+x", "", name) if count > 1 else name
        gpus = [g for g in host.get("gpus") or [] if _gpu_profile(g) == dev]
        return run.get("device") == "cuda" and len(gpus) >= count
    if run.get("device") != "cpu":
        return False
    if name == "cpu":  # this machine, as edgekit bench fingerprints it (GPUs included)
        return host.get("fingerprint") == (here_fingerprint or devmod.detect().fingerprint)
    return host.get("label") == name


def _same_artifact(run: dict, artifact: dict) -> str:
    """How a bench run's subject is the candidate's artifact ("sha256"; "file name and size" when
    the run had no manifest to give a sha256), or "" when it is not."""
    subj = run.get("subject") or {}
    if subj.get("sha256"):
        return "sha256" if subj["sha256"] == artifact.get("sha256") else ""
    same = (
        artifact.get("path")
        and Path(str(subj.get("path") or "")).name == Path(str(artifact["path"])).name
        and subj.get("size_bytes") == artifact.get("size_bytes")
    )
    return "file name and size (the run had no manifest)" if same else ""


def fill_report(run_dir: Path | str, store: Path | str | None = None, write: bool = True) -> dict[str, Any]:
    """Put measured figures from the bench results store (`edgekit bench import` merges other
    machines' runs into it) into an existing run's report.json: for every candidate whose
    artifact sha256 a run on the report's target measured (the latest such run, batch 1), its
    `speed` becomes figures_from_run(...) beside its plan row; a `speed_bar` in the report is
    judged again per candidate. report.json is rewritten atomically; report.md is not (it is
    rendered from the run itself). Returns what was filled and what was not."""
    run_dir = Path(run_dir).expanduser()
    path = run_dir / "report.json" if run_dir.is_dir() else run_dir
    try:
        report = json.loads(path.read_text())
        target = report["target"]
        candidates = report["candidates"]
    except (OSError, ValueError) as e:
        raise EdgekitError(f"{path}: not a readable run report ({e})") from None
    except (KeyError, TypeError):
        raise EdgekitError(f"{path}: not a run report of `edgekit quantize --target`") from None
    runs, problems = results_store.load_runs(store)
    bar = None
    bar_text = (
        (report.get("speed_bar") or {}).get("text") if isinstance(report.get("speed_bar"), dict) else None
    )
    if bar_text:
        bar = parse_speed_bar(bar_text)
    filled, unmeasured = [], []
    here = devmod.detect().fingerprint if target.get("name") == "cpu" else None
    for c in candidates:
        art = c.get("artifact") or {}
        if not art.get("sha256"):
            continue
        mine = [
            (r, how) for r in runs if (how := _same_artifact(r, art)) and run_matches_target(r, target, here)
        ]
        if not mine:
            unmeasured.append(c.get("format"))
            continue
        run, how = mine[-1]
        figs = figures_from_run(run, c.get("format") or "?", target.get("name") or "?", c.get("plan"))
        figs.here = False
        figs.notes.append(
            f"measured on {figs.measured_on and figs.measured_on['device_name']}, filled in later; "
            f"the run's artifact matched by {how}"
        )
        c[SPEED_KEY] = figs.to_dict()
        if bar is not None:
            c["speed_bar"] = {"passes": bar.passes(figs), "reason": bar.reason(figs)}
        filled.append(c.get("format"))
        if report.get("pick") == c.get("format") and "pick_speed" in report:
            report["pick_speed"] = c[SPEED_KEY]
    pick = next((c for c in candidates if c.get("format") == report.get("pick")), None)
    if bar is not None and pick is not None and (pick.get("speed_bar") or {}).get("passes") is False:
        report.setdefault("notes", []).append(
            f"measured on the device, the pick {pick['format']} misses the speed bar: "
            f"{pick['speed_bar']['reason']}; run the job on the device for a pick on measured speed"
        )
    if filled and write:
        atomic.write_json(path, report)
    return {
        "report": str(path),
        "filled": filled,
        "not_measured_there": unmeasured,
        "store": str(results_store.store_dir(store)),
        "problems": problems,
    }


# ---- rendering ----------------------------------------------------------------------------


def _fmt(name: str, x: float | int | None) -> str:
    if x is None:
        return "-"
    if name == "ttft_s":
        return f"{1000 * x:,.1f} ms"
    if name == "peak_memory_bytes":
        return f"{x / 2**20:,.1f} MiB"
    if name == "roofline_share":
        return f"{100 * x:.0f}%"
    return f"{x:,.1f} tok/s"


_ROW_LABEL = {
    "prefill_tok_s": "prefill",
    "decode_tok_s": "decode",
    "ttft_s": "TTFT",
    "peak_memory_bytes": "peak memory",
    "roofline_share": "roofline share",
}


def render_rows(figs: SpeedFigures) -> list[tuple[str, str, str, str]]:
    """(figure, value, source, planned) per figure, for a CLI or markdown table."""
    return [
        (_ROW_LABEL[n], _fmt(n, f.value), f.source, _fmt(n, f.planned))
        for n in FIGURES
        for f in (figs.figure(n),)
    ]


def summary(figs: SpeedFigures) -> str:
    """One line: 'decode 52.1 tok/s (plan 178.3), prefill ..., TTFT ..., peak 190.2 MiB (plan ...)
    measured'."""
    parts = []
    for n in ("decode_tok_s", "prefill_tok_s", "ttft_s", "peak_memory_bytes"):
        f = figs.figure(n)
        shown = _fmt(n, f.value)
        if f.measured is not None and f.planned is not None:
            shown += f" (plan {_fmt(n, f.planned)})"
        parts.append(f"{_ROW_LABEL[n]} {shown}")
    return ", ".join(parts) + f": {'measured' if figs.measured else 'planned'}"
