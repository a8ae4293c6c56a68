"""Speed and memory on the device itself: load time, TTFT, prefill and decode tok/s (median and
spread over repeats), peak RSS and VRAM, and the share of the bandwidth roofline decode reached.

The measurement runs in a child process (`edgekit.bench._child`) through the runtime
registry, so any registered runtime can be measured and the peak-memory figures count one
model only. A runtime that declares itself a server (its `server` capability) is measured by
the serving benchmark instead (edgekit.bench.serve). The roofline and the memory prediction
come from the planner (edgekit.plan): the same bytes-per-token and weights + KV + overhead
arithmetic `edgekit plan` prints.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit.artifact import tool_versions
from edgekit.bench import serve
from edgekit.bench.results import (
    METHOD,
    SCHEMA,
    BatchResult,
    BenchResult,
    Settings,
    Stat,
    parse_batches,
)
from edgekit.bench.subject import Subject, choose_runtime, planner_figures, resolve_subject
from edgekit.errors import EdgekitError
from edgekit.runtimes import options as runtime_options
from edgekit.runtimes import registry

# the results types and the subject live in their own modules; these names stay importable here
__all__ = [
    "METHOD",
    "SCHEMA",
    "BatchResult",
    "BenchResult",
    "Settings",
    "Stat",
    "Subject",
    "bench",
    "choose_runtime",
    "measure",
    "parse_batches",
    "planner_figures",
    "resolve_subject",
]

WARMUP_TOKENS = 16

# ---- running it ---------------------------------------------------------------------------


def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes on this machine have used since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = fh.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def foreign_share(busy0: float | None, busy1: float | None, own_cpu_s: float, wall_s: float) -> float | None:
    """Share of the machine's CPU time that other processes used while we measured."""
    if busy0 is None or busy1 is None or wall_s <= 0:
        return None
    return max(0.0, (busy1 - busy0 - own_cpu_s) / (wall_s * (os.cpu_count() or 1)))


def build_options(
    info: registry.RuntimeInfo, pairs: Sequence[str] = (), given: Mapping[str, Any] | None = None
):
    """The runtime's Options from `-o key=value` pairs on top of `given` (typed values of alias
    flags; keys the runtime does not have are ignored there, never in `pairs`)."""
    return runtime_options.build(info.options, pairs, given, runtime=info.name)


def measure(runtime: str, path: Path, settings: Settings, options: object = None) -> dict:
    """Run the measuring child; its raw result (per-repeat timings, peaks), with the share of
    the CPU other processes took meanwhile (`foreign_cpu_share`: CPU numbers are low when high)."""
    spec = {
        "runtime": runtime,
        "path": str(path),
        "load": {
            "n_ctx": settings.ctx,
            "threads": settings.threads,
            "device": settings.device,
            "scoring": False,
        },
        "options": runtime_options.to_kwargs(options),
        "prompt_tokens": settings.prompt_tokens,
        "gen_tokens": settings.gen_tokens,
        "batches": list(settings.batches),
        "repeats": settings.repeats,
        "warmup": settings.warmup,
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as td:
        spec_path, out_path, err_path = Path(td) / "spec.json", Path(td) / "out.json", Path(td) / "stderr.txt"
        spec_path.write_text(json.dumps(spec))
        busy0, kids0, t0 = cpu_busy_seconds(), _children_cpu(), time.perf_counter()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgekit.bench._child", str(spec_path), str(out_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
            try:
                proc.wait(timeout=settings.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise EdgekitError(
                    f"the benchmark ran past {settings.timeout_s:.0f} s and was stopped"
                ) from None
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        share = foreign_share(busy0, cpu_busy_seconds(), _children_cpu() - kids0, time.perf_counter() - t0)
        try:
            out = json.loads(out_path.read_text())
        except (OSError, ValueError):
            tail = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
            why = f"exit status {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")
            raise EdgekitError(f"the measuring process died ({why})") from None
    if not out.get("ok"):
        if out.get("kind") == "internal" and os.environ.get("EDGEKIT_DEBUG"):
            sys.stderr.write(out.get("traceback", ""))
        raise EdgekitError(out.get("error", "the measuring process failed"))
    out["foreign_cpu_share"] = None if share is None else round(share, 4)
    return out


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench(
    arg: str,
    runtime: str | None = None,
    settings: Settings | None = None,
    label: str | None = None,
    save: bool = True,
    store: Path | None = None,
    on_start=None,
    options: Sequence[str] = (),
    option_values: Mapping[str, Any] | None = None,
    target: str | None = None,
    on_level=None,
    on_wait=None,
) -> BenchResult:
    """Measure `arg` (ARTIFACT|MODEL) on this machine. `on_start(subject, runtime_info)` is called
    once everything is checked, just before the measuring process starts. `options` are the
    runtime's `-o key=value` pairs, `option_values` typed values from alias flags. A server
    runtime is measured by the serving benchmark (`target`, `on_level`, `on_wait` go to it)."""
    from edgekit.bench import device as devmod

    settings = settings or Settings()
    settings.check()
    subject = resolve_subject(arg)
    host = devmod.detect(label)
    info = choose_runtime(subject, runtime, settings.device, host)
    opts = build_options(info, options, option_values)
    if info.server:  # measured as a serving benchmark, its whole process tree
        return serve.run_serving(
            subject,
            info,
            settings,
            opts,
            host,
            target=target,
            save=save,
            store=store,
            on_start=on_start,
            on_level=on_level,
            on_wait=on_wait,
        )
    if settings.device == "cpu" or "cuda" not in info.devices or not host.gpus:
        devmod.planner_target(host, "cpu")  # measure (or read) the bandwidth now, not beside the benchmark
    if on_start is not None:
        on_start(subject, info)
    raw = measure(info.name, subject.path, settings, opts)
    result = assemble(subject, info, host, settings, raw)
    if save:
        from edgekit.bench.results_store import save_result

        path = save_result(result, store)
        result.notes.append(f"saved to {path}")
    return result


def assemble(subject: Subject, info, host, settings: Settings, raw: dict) -> BenchResult:
    from edgekit.bench import device as devmod

    device = raw["device"]
    notes = list(subject.notes)
    busy = raw.get("foreign_cpu_share")
    if busy is not None and busy > 0.10 and device == "cpu":
        notes.append(
            f"other processes used {100 * busy:.0f}% of this machine's CPU time during the measurement: "
            "the CPU figures are likely low"
        )
    batches = []
    for b in settings.batches:
        runs = [r for r in raw["runs"] if r["batch"] == b]
        if not runs:
            batches.append(BatchResult(b, False, raw["unsupported"].get(str(b), "not measured")))
            continue
        gens = [_gen(r) for r in runs]
        cpu = [
            g.batch * (g.generated_tokens - 1) / r["decode_cpu_s"]
            for g, r in zip(gens, runs, strict=True)
            if r.get("decode_cpu_s")
        ]
        batches.append(
            BatchResult(
                b,
                True,
                None,
                Stat.of(g.prompt_s for g in gens),
                Stat.of(g.prefill_tok_s for g in gens),
                Stat.of(g.decode_tok_s for g in gens),
                decode_tok_per_cpu_s=Stat.of(cpu) if cpu else None,
            )
        )
    measured_peak = raw["vram"]["peak_bytes"] if device == "cuda" else raw["peak_rss_bytes"]
    target, target_note = devmod.planner_target(host, device)
    planner = planner_figures(
        subject,
        target,
        target_note,
        settings,
        batches,
        measured_peak,
        device,
        runtime=getattr(info, "name", None),
    )
    return BenchResult(
        id=f"{time.strftime('%Y%m%dT%H%M%S')}-{host.fingerprint[:8]}-{secrets.token_hex(3)}",
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        subject=subject.to_dict(),
        runtime={"name": raw["runtime"], "version": raw["runtime_version"], "entry_point": info.target},
        device=device,
        host=host.to_dict(),
        settings={
            **asdict(settings),
            "batches": list(settings.batches),
            "n_ctx": settings.ctx,
            "threads_used": settings.threads or os.cpu_count(),
        },
        load_s=raw["load_s"],
        peak_rss_bytes=raw["peak_rss_bytes"],
        peak_vram_bytes=raw["vram"]["peak_bytes"],
        batches=batches,
        planner=planner,
        vram=raw["vram"],
        foreign_cpu_share=busy,
        tool_versions={
            **raw["packages"],
            **tool_versions("nvidia-ml-py"),
            "python": platform.python_version(),
        },
        notes=notes,
    )


def _gen(r: dict):
    from edgekit.runtimes.base import Generation

    return Generation(
        "",
        r["prompt_tokens"],
        r["generated_tokens"],
        0.0,
        r["prompt_s"],
        r["decode_s"],
        batch=r.get("batch_reported") or r["batch"],
    )
