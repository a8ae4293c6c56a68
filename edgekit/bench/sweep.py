"""`edgekit sweep`: the main job over models x targets x bars, serially here or on Ray.

A sweep file (TOML) lists models, targets and bars (and the main job's options); it is read and
checked whole before any work starts (`load_sweep`): a malformed file, an unknown model, target,
format or bar is one line naming the entry. The unit of work is one (model, target) job: every
bar of it runs the main job (`run_main_job`) in one run directory, so the bars share its
artifacts and complete scores. Before the jobs of a model, its reference store (and the
importance matrix, with imatrix = "auto") is built once (`prepare_model`): that part is serial,
and the jobs find it in the cache directory. Without Ray the jobs run one after the other in
this process (`run_serial`); with Ray (`edgekit.bench.sweep_ray`) each job is a task, retried
when its worker dies, and the caches make a retry resume instead of redo. The same function
(`run_pair`) runs a job in both cases; it records where it ran.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgekit import atomic
from edgekit.artifact import safe_stem
from edgekit.bench.mainjob import JobOptions
from edgekit.errors import ConfigError, EdgekitError, UnknownName
from edgekit.progress import Progress

# keys of a sweep file (the main job's options are JobOptions' fields), and of its [ray] table
_OPTION_KEYS = tuple(f.name for f in fields(JobOptions))
_KEYS = {"models", "targets", "bars", "ray", *_OPTION_KEYS}
_RAY_KEYS = {"num_cpus", "max_retries"}
# the environment a job needs wherever it runs: edgekit's own settings and the hub's offline
# switch and cache (never a token: a worker brings its own credentials)
_FORWARD = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TQDM_DISABLE")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class SweepTarget:
    name: str  # as run_main_job takes it: a built-in name, NxNAME, or a user target's name
    toml: str | None  # the user target's TOML text (shipped to the job), None for built-ins
    source: str  # builtin | detected | the file it came from


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    models: tuple[str, ...]
    targets: tuple[SweepTarget, ...]
    bars: tuple[str, ...]
    options: JobOptions = JobOptions()  # the main job's options, the same for every job
    num_cpus: float = 1.0
    max_retries: int = 3

    def __getattr__(self, name: str) -> Any:
        """An option read as the spec's own attribute (spec.evaluation = spec.options.evaluation)."""
        if name in _OPTION_KEYS:
            return getattr(self.options, name)
        raise AttributeError(name)

    @property
    def name(self) -> str:
        return safe_stem(self.path.stem)

    def jobs(self, out: Path) -> list[PairJob]:
        return [
            PairJob(
                index=i * len(self.targets) + j,
                model=m,
                target=t.name,
                bars=self.bars,
                out=str(out),
                options=self.options,
            )
            for i, m in enumerate(self.models)
            for j, t in enumerate(self.targets)
        ]

    def target_tomls(self) -> dict[str, str]:
        """The user targets' TOML texts by name: a job installs them wherever it runs."""
        return _tomls(self.targets)

    def to_dict(self) -> dict:
        return {
            "file": str(self.path),
            "models": list(self.models),
            "targets": [{"name": t.name, "source": t.source} for t in self.targets],
            "bars": list(self.bars),
            **self.options.kwargs(),
            "ray": {"num_cpus": self.num_cpus, "max_retries": self.max_retries},
        }


def _is_multi(name: str) -> bool:
    return bool(re.match(r"^\d+x.", name))


@dataclass(frozen=True)
class PairJob:
    """One (model, target) job: the main job at every bar, in one run directory."""

    index: int
    model: str
    target: str
    bars: tuple[str, ...]
    out: str
    options: JobOptions = JobOptions()

    @property
    def key(self) -> str:
        return f"{self.index:03d}-{safe_stem(self.model)}-{safe_stem(self.target)}"


@dataclass
class BarResult:
    bar: str
    pick: str | None
    pick_artifact: str | None
    report_dir: str
    measured: list[str]
    candidates: list[dict]  # format, kind, status, sizes, quality, ran_on
    phases: dict
    auto: dict | None = None  # the auto rungs: on, the standard pick, what the pick saves against it

    @classmethod
    def from_dict(cls, d: dict) -> BarResult:
        return cls(**d)


@dataclass
class JobResult:
    model: str
    target: str
    run_dir: str | None
    ran_on: dict  # where the attempt that finished it ran (engine, node, worker, host, pid)
    wall_s: float
    bars: list[BarResult] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)  # every attempt's placement, first first
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> JobResult:
        d = dict(d)
        d["bars"] = [BarResult.from_dict(b) for b in d.get("bars", [])]
        return cls(**d)

    def picks(self) -> dict[str, str | None]:
        return {b.bar: b.pick for b in self.bars}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SweepReport:
    spec: SweepSpec
    out: Path
    engine: str  # serial | ray
    jobs: list[JobResult]
    wall_s: float
    prepare_s: dict[str, float]  # per model: the serial part (reference store, importance matrix)
    cluster: dict | None = None  # Ray: address, nodes, resources at the start

    def picks(self) -> dict[str, dict[str, dict[str, str | None]]]:
        """model -> target -> bar -> picked format."""
        out: dict[str, dict[str, dict[str, str | None]]] = {}
        for j in self.jobs:
            out.setdefault(j.model, {})[j.target] = j.picks()
        return out

    @property
    def failed(self) -> list[JobResult]:
        return [j for j in self.jobs if j.error]

    def to_dict(self) -> dict:
        return {
            "sweep": self.spec.to_dict(),
            "out": str(self.out),
            "engine": self.engine,
            "cluster": self.cluster,
            "wall_s": round(self.wall_s, 2),
            "prepare_s": {k: round(v, 2) for k, v in self.prepare_s.items()},
            "picks": self.picks(),
            "jobs": [j.to_dict() for j in self.jobs],
            "method": {
                "unit": "one task per (model, target): the main job at every bar in one run directory, "
                "so the bars share its artifacts and complete scores",
                "serial": "per model, before its jobs: the reference store (and the importance matrix "
                "with imatrix = 'auto'), once, into the cache directory the jobs read",
                "retries": "a job whose worker dies is run again (Ray's task retries); the cache "
                "(artifacts with manifests, sealed scores, partial scores per bar) makes it resume",
                "ran_on": "each candidate's ran_on is the placement of the attempt that finished its "
                "job; attempts lists every attempt's",
            },
        }


# ---- the sweep file ------------------------------------------------------------------------


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep file whole; one-line ConfigError naming the entry otherwise."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise EdgekitError(f"sweep file {p}: cannot read it ({e.strerror})") from None
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(p, None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(p, None, f"not valid TOML ({e})") from None
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise ConfigError(p, unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    base = p.parent
    models = _str_list(p, d, "models")
    targets = _str_list(p, d, "targets")
    bars = _str_list(p, d, "bars") if "bars" in d else ["kld<=0.03"]
    formats = _str_list(p, d, "formats") if "formats" in d else None
    ctx = _opt(p, d, "ctx", int)
    if ctx is not None and ctx <= 0:
        raise ConfigError(p, "ctx", f"must be positive, got {ctx}")
    imatrix = _opt(p, d, "imatrix", str) or "auto"
    if imatrix not in ("auto", "none"):
        imatrix = _file(p, base, "imatrix", imatrix)
    calibration = _opt(p, d, "calibration", str)
    evaluation = _opt(p, d, "evaluation", str)
    if calibration is not None:
        calibration = _text_file(p, base, "calibration", calibration)
    if evaluation is not None:
        evaluation = _text_file(p, base, "evaluation", evaluation)
    speed = _opt(p, d, "speed", str) or "pick"
    if speed not in ("pick", "all", "none"):
        raise ConfigError(p, "speed", f"{speed!r}: choose pick, all or none")
    speed_bar = _opt(p, d, "speed_bar", str)
    score_runtime = _opt(p, d, "score_runtime", str) or "transformers"
    full = _opt(p, d, "full", bool) or False
    auto = _opt(p, d, "auto", bool)
    ray = d.get("ray", {})
    if not isinstance(ray, dict):
        raise ConfigError(p, "ray", "expected a table ([ray] num_cpus = 1, max_retries = 3)")
    if bad := sorted(set(ray) - _RAY_KEYS):
        raise ConfigError(p, f"ray.{bad[0]}", f"unknown key (known: {', '.join(sorted(_RAY_KEYS))})")
    num_cpus = ray.get("num_cpus", 1)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus <= 0:
        raise ConfigError(p, "ray.num_cpus", f"expected a positive number, got {num_cpus!r}")
    retries = ray.get("max_retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(p, "ray.max_retries", f"expected a whole number >= 0, got {retries!r}")

    _check_models(p, models)
    resolved = _check_targets(p, base, targets)
    _check_bars(p, bars, speed_bar, speed)
    if formats is not None:
        _check_formats(p, formats, resolved)
    if score_runtime != "transformers":
        from edgekit.runtimes import registry

        try:
            registry.get(score_runtime)
        except EdgekitError as e:
            raise ConfigError(p, "score_runtime", e.one_line()) from None
    return SweepSpec(
        path=p,
        models=tuple(models),
        targets=tuple(resolved),
        bars=tuple(bars),
        options=JobOptions(
            formats=tuple(formats) if formats is not None else None,
            ctx=ctx,
            imatrix=imatrix,
            calibration=calibration,
            evaluation=evaluation,
            speed=speed,
            speed_bar=speed_bar,
            score_runtime=score_runtime,
            full=full,
            auto=True if auto is None else auto,
        ),
        num_cpus=float(num_cpus),
        max_retries=retries,
    )


def _str_list(p: Path, d: dict, key: str) -> list[str]:
    if key not in d:
        raise ConfigError(p, key, "missing")
    v = d[key]
    if not isinstance(v, list) or not v:
        raise ConfigError(p, key, f"expected a non-empty list of strings, got {v!r}")
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x.strip():
            raise ConfigError(p, f"{key}[{i}]", f"expected a non-empty string, got {x!r}")
    seen: set[str] = set()
    for i, x in enumerate(v):
        if x.strip().lower() in seen:
            raise ConfigError(p, f"{key}[{i}]", f"{x!r} is listed twice")
        seen.add(x.strip().lower())
    return [x.strip() for x in v]


def _opt(p: Path, d: dict, key: str, typ: type) -> Any:
    if key not in d:
        return None
    v = d[key]
    if (typ is not bool and isinstance(v, bool)) or not isinstance(v, typ):
        raise ConfigError(p, key, f"expected {'a whole number' if typ is int else typ.__name__}, got {v!r}")
    return v


def _file(p: Path, base: Path, key: str, value: str) -> str:
    f = (
        (base / value).expanduser()
        if not Path(value).expanduser().is_absolute()
        else Path(value).expanduser()
    )
    if not f.is_file():
        raise ConfigError(p, key, f"{value}: no such file")
    return str(f.absolute())


def _text_file(p: Path, base: Path, key: str, value: str) -> str:
    from edgekit.text import read_text_file

    f = _file(p, base, key, value)
    try:
        read_text_file(f, f"{key} text")
    except EdgekitError as e:
        raise ConfigError(p, key, e.one_line()) from None
    return f


def _check_models(p: Path, models: list[str]) -> None:
    """Known before anything is downloaded or imported: a catalogue name, a local model
    directory or GGUF, or a hub id (an uncatalogued one is checked when its job opens it)."""
    from edgekit.models.catalogue import resolve
    from edgekit.models.source import peek_entry

    for i, m in enumerate(models):
        where = f"models[{i}]"
        if peek_entry(m) is not None:
            continue
        path = Path(m).expanduser()
        if path.exists():
            raise ConfigError(p, where, f"{m}: not a model directory (with config.json) or a .gguf file")
        if _HUB_ID.match(m):
            continue
        try:
            resolve(m)
        except EdgekitError as e:
            raise ConfigError(p, where, e.one_line()) from None


def _check_targets(p: Path, base: Path, targets: list[str]) -> list[SweepTarget]:
    from edgekit.profiles.target import device_from_toml, get_target

    out: list[SweepTarget] = []
    for i, t in enumerate(targets):
        where = f"targets[{i}]"
        if t.endswith(".toml") or "/" in t:
            f = Path(t).expanduser()
            f = f if f.is_absolute() else base / f
            if not f.is_file():
                raise ConfigError(p, where, f"{t}: no such target file")
            try:
                dev = device_from_toml(f)
            except EdgekitError as e:
                raise ConfigError(p, where, e.one_line()) from None
            out.append(SweepTarget(dev.name, f.read_text(encoding="utf-8"), str(f.absolute())))
            continue
        try:
            tg = get_target(t)
        except UnknownName as e:
            raise ConfigError(p, where, e.one_line()) from None
        except EdgekitError as e:
            raise ConfigError(p, where, e.one_line()) from None
        src = tg.device.source
        toml = None
        if src not in ("builtin", "detected") and Path(src).is_file():
            toml = Path(src).read_text(encoding="utf-8")  # the user's own target file
        out.append(SweepTarget(t.strip().lower(), toml, src))
    names = [t.name for t in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(p, f"targets[{i}]", f"target {n!r} is listed twice")
    return out


def _check_bars(p: Path, bars: list[str], speed_bar: str | None, speed: str) -> None:
    from edgekit.bench.job_speed import parse_speed_bar
    from edgekit.bench.select import parse_bar

    seen: dict[str, int] = {}
    for i, b in enumerate(bars):
        try:
            parse_bar(b)
        except EdgekitError as e:
            raise ConfigError(p, f"bars[{i}]", e.one_line()) from None
        slug = bar_dir(b)
        if slug in seen:
            raise ConfigError(p, f"bars[{i}]", f"{b!r} is the same bar as bars[{seen[slug]}]")
        seen[slug] = i
    if speed_bar is not None:
        try:
            parse_speed_bar(speed_bar)
        except EdgekitError as e:
            raise ConfigError(p, "speed_bar", e.one_line()) from None
        if speed == "none":
            raise ConfigError(p, "speed_bar", "needs speed figures: drop speed = 'none'")


def _check_formats(p: Path, formats: list[str], targets: list[SweepTarget]) -> None:
    from edgekit.bench.mainjob import check_requested
    from edgekit.formats import get_format
    from edgekit.profiles.target import get_target

    fmts = []
    for i, f in enumerate(formats):
        try:
            fmt = get_format(f)
        except EdgekitError as e:
            raise ConfigError(p, f"formats[{i}]", e.one_line()) from None
        if fmt.is_reference:
            raise ConfigError(p, f"formats[{i}]", f"{fmt.id} is the reference, not a candidate")
        fmts.append(fmt)
    with installed_targets(_tomls(targets)):
        for i, t in enumerate(targets):
            tg = get_target(t.name)
            try:
                check_requested(fmts, tg.device, tg.name)
            except EdgekitError as e:
                raise ConfigError(p, f"targets[{i}]", e.one_line()) from None


def _tomls(targets: list[SweepTarget] | tuple[SweepTarget, ...]) -> dict[str, str]:
    out = {}
    for t in targets:
        if t.toml:
            out[t.name.split("x", 1)[1] if _is_multi(t.name) else t.name] = t.toml
    return out


def bar_dir(bar: str) -> str:
    """A directory name for a bar: kld<=0.03 -> kld-le-0.03, ppl<=+3% -> ppl-le-3pct."""
    s = bar.strip().lower().replace(" ", "")
    for a, b in (("<=", "-le-"), (">=", "-ge-"), ("<", "-lt-"), (">", "-gt-"), ("%", "pct"), ("+", "")):
        s = s.replace(a, b)
    return safe_stem(s.replace("same_top", "same-top"))


# ---- running a job -------------------------------------------------------------------------


@contextmanager
def installed_targets(tomls: dict[str, str]) -> Iterator[None]:
    """The sweep's user targets as edgekit's targets dir for the duration (a private config
    dir: the same targets on every machine a job runs on)."""
    if not tomls:
        yield
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgekit-sweep-targets-"))
    (tmp / "targets").mkdir()
    for name, text in tomls.items():
        (tmp / "targets" / f"{safe_stem(name)}.toml").write_text(text, encoding="utf-8")
    old = os.environ.get("EDGEKIT_CONFIG_DIR")
    os.environ["EDGEKIT_CONFIG_DIR"] = str(tmp)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("EDGEKIT_CONFIG_DIR", None)
        else:
            os.environ["EDGEKIT_CONFIG_DIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def forwarded_environment() -> dict[str, str]:
    """What a job takes from the driver's environment: EDGEKIT_* (cache dir, caps) and the
    hub's offline switch and cache paths; EDGEKIT_CONFIG_DIR is replaced by the shipped targets."""
    env = {k: v for k, v in os.environ.items() if k.startswith("EDGEKIT_") and k != "EDGEKIT_CONFIG_DIR"}
    env.update({k: os.environ[k] for k in _FORWARD if k in os.environ})
    return env


def here(engine: str = "serial", **ids: str) -> dict:
    """A placement record: engine, host, pid, and the engine's node / worker ids."""
    return {"engine": engine, "host": socket.gethostname(), "pid": os.getpid(), **ids}


def prepare_model(
    model: str,
    evaluation: str | None,
    imatrix: str,
    formats: tuple[str, ...] | None,
    calibration: str | None,
    env: dict[str, str],
    progress: Progress | None = None,
) -> float:
    """The serial part of a model's jobs, once: open the checkpoint, build its reference store
    (and the 'auto' importance matrix when a candidate takes one) into the cache. Seconds."""
    from edgekit.bench.reference import reference_store
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text, read_text_file

    t0 = time.perf_counter()
    progress = progress or Progress()
    with _environment(env):
        ck = open_checkpoint(model)
        text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
        progress.say(f"{model}: reference store (serial, once per model)")
        reference_store(ck, text, progress=progress.windows)
        if imatrix == "auto" and _takes_imatrix(formats):
            from edgekit.quantize.gguf_build import importance_matrix

            progress.say(f"{model}: importance matrix (serial, once per model)")
            importance_matrix(ck, "auto", calibration, progress)
    return time.perf_counter() - t0


def _takes_imatrix(formats: tuple[str, ...] | None) -> bool:
    from edgekit.formats import get_format

    if formats is None:
        return True  # the default ladder holds GGUF everywhere
    return any("imatrix" in get_format(f).impl.options for f in formats)


def run_pair(
    job: PairJob,
    env: dict[str, str],
    tomls: dict[str, str],
    where: dict,
    progress: Progress | None = None,
) -> dict:
    """One (model, target) job, wherever it runs: every bar through the main job in one run
    directory, each bar's reports moved to run_dir/<bar>/ as it finishes. A JobResult as a dict
    (it travels back from a Ray worker); an EdgekitError becomes its `error`."""
    from edgekit.bench.mainjob import run_main_job

    t0 = time.perf_counter()
    out = Path(job.out)
    attempts = out / "attempts" / job.key
    attempts.mkdir(parents=True, exist_ok=True)
    atomic.write_json(attempts / f"{time.time_ns()}-{os.getpid()}.json", {**where, "started": time.time()})
    bars: list[dict] = []
    run_dir: Path | None = None
    error = None
    try:
        with _environment(env), installed_targets(tomls):
            for bar in job.bars:
                report = run_main_job(
                    job.model,
                    job.target,
                    bar_text=bar,
                    out_dir=out,
                    progress=progress,
                    **job.options.kwargs(),
                )
                run_dir = Path(report.run_dir)
                bars.append(_collect(run_dir, bar, where))
    except EdgekitError as e:
        error = e.one_line()
    return JobResult(
        model=job.model,
        target=job.target,
        run_dir=str(run_dir) if run_dir else None,
        ran_on=where,
        wall_s=round(time.perf_counter() - t0, 2),
        bars=[BarResult.from_dict(b) for b in bars],
        attempts=read_attempts(out, job),
        error=error,
    ).to_dict()


def read_attempts(out: Path, job: PairJob) -> list[dict]:
    d = out / "attempts" / job.key
    if not d.is_dir():
        return []
    recs = []
    for f in sorted(d.glob("*.json"), key=lambda f: int(f.name.split("-")[0])):
        try:
            recs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return recs


def _collect(run_dir: Path, bar: str, where: dict) -> dict:
    """Move the bar's reports into run_dir/<bar>/ (pareto.png, report.json, report.md last)
    and summarise them."""
    dest = run_dir / bar_dir(bar)
    dest.mkdir(exist_ok=True)
    for name in ("pareto.png", "report.json", "report.md"):
        if (run_dir / name).exists():
            os.replace(run_dir / name, dest / name)
    d = json.loads((dest / "report.json").read_text())
    cands = []
    for c in d["candidates"]:
        q, a = c.get("quality") or {}, c.get("artifact") or {}
        measured = bool(q)
        cands.append(
            {
                "format": c["format"],
                "kind": c.get("kind", "standard"),
                "status": c["status"],
                "planned_bytes": c["planned_bytes"],
                "size_bytes": a.get("size_bytes"),
                "kld_mean": q.get("kld_mean"),
                "same_top": q.get("same_top"),
                "ppl_ratio": q.get("ppl_ratio"),
                "ran_on": where if measured or a else None,
            }
        )
    return {
        "bar": bar,
        "pick": d["pick"],
        "pick_artifact": (d.get("pick_artifact") or {}).get("path"),
        "report_dir": str(dest),
        "measured": d["measured_order"],
        "candidates": cands,
        "phases": d.get("phases", {}),
        "auto": {k: auto.get(k) for k in ("enabled", "standard_pick", "saving_bytes", "saving_pct")}
        if (auto := d.get("auto"))
        else None,
    }


# ---- serial -------------------------------------------------------------------------------


def run_serial(
    spec: SweepSpec,
    out: Path,
    progress: Progress | None = None,
    on_job: Callable[[JobResult], None] | None = None,
) -> SweepReport:
    """Every job in this process, one after the other (each model's reference store first)."""
    t0 = time.perf_counter()
    env = forwarded_environment()
    tomls = spec.target_tomls()
    prep: dict[str, float] = {}
    jobs: list[JobResult] = []
    for job in spec.jobs(out):
        if job.model not in prep:
            try:
                o = spec.options
                prep[job.model] = prepare_model(
                    job.model, o.evaluation, o.imatrix, o.formats, o.calibration, env, progress
                )
            except EdgekitError:
                prep[job.model] = 0.0  # its jobs say why, each in one line
        r = JobResult.from_dict(
            run_pair(job, env, tomls, here("serial", node="local", worker="driver"), progress)
        )
        jobs.append(r)
        if on_job:
            on_job(r)
    report = SweepReport(spec, out, "serial", jobs, time.perf_counter() - t0, prep)
    write_summary(report)
    return report


# ---- the summary --------------------------------------------------------------------------


def write_summary(report: SweepReport) -> None:
    """sweep.json (every number), sweep.md (a table), sweep.png (size against KLD per model)."""
    out = report.out
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    data["plot"] = "sweep.png" if _plot(report, out / "sweep.png") else None
    atomic.write_json(out / "sweep.json", data)
    atomic.write_text(out / "sweep.md", markdown(report))


def markdown(report: SweepReport) -> str:
    lines = [
        f"# sweep {report.spec.name}",
        "",
        f"engine: {report.engine}; wall {report.wall_s:.1f} s; serial part (reference stores): "
        + ", ".join(f"{m} {s:.1f} s" for m, s in report.prepare_s.items()),
        "",
        "| model | target | bar | pick | measured | ran on | attempts | job wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j in report.jobs:
        where = _where(j.ran_on)
        if j.error:
            lines.append(
                f"| {j.model} | {j.target} | - | error: {j.error} | - | {where} | {len(j.attempts)} | - |"
            )
            continue
        for b in j.bars:
            lines.append(
                f"| {j.model} | {j.target} | {b.bar} | {b.pick or 'none'}{_saving(b)} | "
                f"{', '.join(b.measured)} | "
                f"{where} | {len(j.attempts)} | {j.wall_s:.1f} s |"
            )
    lines += ["", "Reports: `<model>-<target>/<bar>/report.md` under this directory.", ""]
    return "\n".join(lines)


def _saving(b: BarResult) -> str:
    """What an auto pick saves against the standard pick, for the table."""
    a = b.auto or {}
    if not a.get("saving_bytes"):
        return ""
    return f" ({a['saving_pct']:.1f} % smaller than {a['standard_pick']})"


def _where(p: dict) -> str:
    if p.get("engine") == "ray":
        node, worker = str(p.get("node_id", ""))[:8], str(p.get("worker_id", ""))[:8]
        return f"node {node} worker {worker} (pid {p.get('pid')})"
    return f"{p.get('host')} (pid {p.get('pid')})"


def _plot(report: SweepReport, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(j.model for j in report.jobs))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for j in (j for j in report.jobs if j.model == m and not j.error):
            pts: dict[str, tuple[float, float]] = {}
            picks = set()
            for b in j.bars:
                for c in b.candidates:
                    if c["kld_mean"] is not None:
                        pts[c["format"]] = ((c["size_bytes"] or c["planned_bytes"]) / 1024**2, c["kld_mean"])
                if b.pick:
                    picks.add(b.pick)
            if pts:
                xs, ys = zip(*sorted(pts.values()), strict=True)
                ax.plot(xs, ys, marker="o", label=j.target)
                for f in picks & set(pts):
                    ax.scatter([pts[f][0]], [pts[f][1]], s=120, facecolors="none", edgecolors="black")
        ax.set_title(m)
        ax.set_xlabel("size (MiB)")
        ax.set_ylabel("KLD (nats)")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    from edgekit.atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True
