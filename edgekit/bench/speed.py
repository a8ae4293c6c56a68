"""Speed and memory on the device itself: load time, TTFT, prefill and decode tok/s (median and
spread over repeats), peak RSS and VRAM, and the share of the bandwidth roofline decode reached.

The measurement runs in a child process (`edgekit.bench._child`) through the runtime
registry, so any registered runtime can be measured and the peak-memory figures count one
model only. The roofline and the memory prediction come from the planner (edgekit.plan): the
same bytes-per-token and weights + KV + overhead arithmetic `edgekit plan` prints.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit import __version__
from edgekit.errors import EdgekitError

SCHEMA = "edgekit.bench/1"
WARMUP_TOKENS = 16

METHOD = {
    "ttft": "wall time from the generate call to the first new token (prefill of the whole prompt from an empty "
    "cache + first greedy sample), inside the measuring process",
    "prefill_tok_s": "batch x prompt tokens / TTFT",
    "decode_tok_s": "batch x (generated tokens - 1) / time from the first new token to the last; greedy, EOS "
    "ignored, exactly --gen-tokens per sequence",
    "repeats": "median, min/max and quartiles over the repeats; each repeat is one generation per batch size, "
    "after warmup generation(s) of the full prompt and up to 16 tokens that are not counted",
    "load_s": "wall time of the runtime's load() (file to ready session), after its library is imported",
    "peak_rss": "VmHWM of the measuring child process: interpreter + runtime library + model + caches, one "
    "fresh process per bench",
    "peak_vram": "NVML per-process used memory (CUDA context included), largest sample taken after loading and "
    "after every generation; torch.cuda.max_memory_reserved alongside when torch drives the GPU",
    "roofline": "decode tok/s measured / planner bound (target memory bandwidth / bytes read per decode step, "
    "edgekit.plan, with the KV cache at the mean decode context: prompt + gen/2)",
    "memory_ratio": "planner prediction (weights + KV cache at n_ctx + runtime overhead, per device) / measured "
    "peak (RSS on the CPU, VRAM on a GPU)",
    "decode_tok_per_cpu_s": "batch x (generated tokens - 1) / CPU seconds of the measuring process (all threads) "
    "while decoding, where the runtime reports them (Generation.extra['decode_cpu_s']); unlike tok/s it barely "
    "moves when other processes compete for the cores",
    "prompt": "the first N tokens of edgekit's evaluation text in the runtime's own tokenizer",
    "foreign_cpu_share": "(machine CPU seconds from /proc/stat - the measuring process's own) / (wall x cores) "
    "over the measurement: how much other processes competed with it",
}


# ---- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> Stat:
        v = [float(x) for x in values if x is not None and math.isfinite(x)]
        if not v:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, 0, ())
        q1, q3 = (
            (statistics.quantiles(v, n=4, method="inclusive")[i] for i in (0, 2))
            if len(v) > 1
            else (v[0], v[0])
        )
        return cls(statistics.median(v), min(v), max(v), q1, q3, len(v), tuple(v))

    def to_dict(self, digits: int = 4) -> dict:
        r = lambda x: round(x, digits) if math.isfinite(x) else None  # noqa: E731
        return {
            "median": r(self.median),
            "min": r(self.min),
            "max": r(self.max),
            "q1": r(self.q1),
            "q3": r(self.q3),
            "n": self.n,
            "values": [r(x) for x in self.values],
        }


@dataclass
class BatchResult:
    batch: int
    measured: bool
    reason: str | None = None  # why not measured
    ttft_s: Stat | None = None
    prefill_tok_s: Stat | None = None
    decode_tok_s: Stat | None = None
    roofline: dict | None = None  # bound_tok_s, bytes_per_token, bandwidth_gbs, fraction | reason
    decode_tok_per_cpu_s: Stat | None = (
        None  # decode tokens per CPU-second of the process, when the runtime reports it
    )
    # serving runtimes (vLLM): batch is the number of concurrent requests
    itl_s: dict | None = None  # inter-token latency over all requests: mean, p50, p90, p99, n
    throughput: dict | None = None  # output_tok_s, total_tok_s, requests_per_s over the level's wall time
    server: dict | None = None  # what the server's own metrics recorded during the level

    @property
    def roofline_fraction(self) -> float | None:
        return (self.roofline or {}).get("fraction")

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "measured": self.measured,
            "reason": self.reason,
            "ttft_s": self.ttft_s.to_dict(5) if self.ttft_s else None,
            "prefill_tok_s": self.prefill_tok_s.to_dict(2) if self.prefill_tok_s else None,
            "decode_tok_s": self.decode_tok_s.to_dict(2) if self.decode_tok_s else None,
            "roofline": self.roofline,
            "decode_tok_per_cpu_s": self.decode_tok_per_cpu_s.to_dict(2)
            if self.decode_tok_per_cpu_s
            else None,
        } | {
            k: v
            for k, v in (("itl_s", self.itl_s), ("throughput", self.throughput), ("server", self.server))
            if v
        }


@dataclass
class BenchResult:
    id: str
    created: str
    subject: dict  # path, kind, format, model, size_bytes, sha256
    runtime: dict  # name, version, packages
    device: str  # where the model ran: cpu | cuda
    host: dict  # edgekit.bench.device.HostInfo.to_dict()
    settings: dict
    load_s: float
    peak_rss_bytes: int
    peak_vram_bytes: int | None
    batches: list[BatchResult]
    planner: dict  # target, predicted_peak_bytes, measured_peak_bytes, predicted_over_measured | reason
    vram: dict = field(default_factory=dict)
    foreign_cpu_share: float | None = None  # CPU share other processes took while this ran
    tool_versions: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    method: dict | None = None  # how each figure was measured; default: METHOD (the single-process bench)

    def batch(self, b: int) -> BatchResult | None:
        return next((x for x in self.batches if x.batch == b), None)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "created": self.created,
            "subject": self.subject,
            "runtime": self.runtime,
            "device": self.device,
            "host": self.host,
            "settings": self.settings,
            "load_s": round(self.load_s, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_vram_bytes": self.peak_vram_bytes,
            "vram": self.vram,
            "batches": [b.to_dict() for b in self.batches],
            "planner": self.planner,
            "foreign_cpu_share": self.foreign_cpu_share,
            "notes": list(self.notes),
            "method": self.method or METHOD,
            "tool_versions": self.tool_versions,
        }


@dataclass(frozen=True)
class Settings:
    prompt_tokens: int = 512
    gen_tokens: int = 128
    batches: tuple[int, ...] = (1,)
    repeats: int = 3
    warmup: int = 1
    threads: int | None = None
    device: str | None = None  # cpu | cuda | None: the runtime's best
    n_ctx: int | None = None  # default: prompt + gen
    timeout_s: float | None = None

    def check(self) -> None:
        if self.prompt_tokens < 1:
            raise EdgekitError("--prompt-tokens must be at least 1")
        if self.gen_tokens < 2:
            raise EdgekitError("--gen-tokens must be at least 2 (decode speed needs a second token)")
        if self.repeats < 1 or self.warmup < 0:
            raise EdgekitError("--repeat must be at least 1 and --warmup at least 0")
        if not self.batches or any(b < 1 for b in self.batches):
            raise EdgekitError("--batch sizes must be positive integers")
        if self.threads is not None and self.threads < 1:
            raise EdgekitError("--threads must be at least 1")
        if self.device not in (None, "cpu", "cuda"):
            raise EdgekitError(f"--device must be cpu or cuda, not '{self.device}'")
        if self.n_ctx is not None and self.n_ctx < self.prompt_tokens + self.gen_tokens:
            raise EdgekitError(
                f"--ctx {self.n_ctx} cannot hold {self.prompt_tokens} prompt + {self.gen_tokens} "
                "generated tokens"
            )

    @property
    def ctx(self) -> int:
        return self.n_ctx or self.prompt_tokens + self.gen_tokens


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        out = tuple(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise EdgekitError(f"--batch '{text}': give comma-separated integers, e.g. 1,4,16") from None
    if not out or any(b < 1 for b in out):
        raise EdgekitError(f"--batch '{text}': sizes must be positive integers")
    return out


# ---- what is measured ---------------------------------------------------------------------


@dataclass
class Subject:
    path: Path
    kind: str  # artifact | checkpoint | file
    format: str  # a format id ("gguf:Q4_K_M", "bf16") or a family when the mix is unknown ("gguf")
    model: str | None
    size_bytes: int
    sha256: str | None = None
    entry: object = None  # ModelEntry for the planner, when known
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "format": self.format,
            "model": self.model,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


def resolve_subject(arg: str) -> Subject:
    """ARTIFACT (a file or directory with an edgekit manifest, or a bare .gguf) or MODEL (a
    catalogue name, hub id or Hugging Face directory: the unquantized BF16 checkpoint)."""
    from edgekit.artifact import load_artifact, manifest_path

    p = Path(arg).expanduser()
    if p.is_file():
        art = load_artifact(p)
        if art is not None:
            m = art.manifest
            src = m.get("source") or {}
            return Subject(
                p,
                "artifact",
                art.format,
                src.get("name"),
                art.size_bytes,
                m.get("sha256"),
                _entry_from_source(src),
            )
        notes = []
        if manifest_path(p).is_file():
            notes.append(f"{manifest_path(p).name} does not match the file (size changed): ignored")
        if p.suffix.lower() == ".gguf":
            from edgekit.gguf_io.reader import check_gguf

            check_gguf(p)
            notes.append(
                "no edgekit manifest: the GGUF mix and source model are unknown, so the planner "
                "figures (roofline, memory prediction) are left out"
            )
            return Subject(p, "file", "gguf", None, p.stat().st_size, None, None, notes)
        raise EdgekitError(f"{p}: not an artifact edgekit knows (no manifest, not a .gguf file)")
    if p.is_dir():
        mp = manifest_path(p)
        if mp.is_file():
            try:
                m = json.loads(mp.read_text())
                src = m.get("source") or {}
                return Subject(
                    p,
                    "artifact",
                    m["format"],
                    src.get("name"),
                    int(m.get("size_bytes") or _dir_size(p)),
                    m.get("sha256"),
                    _entry_from_source(src) or _entry_from_dir(p),
                )
            except (ValueError, KeyError, TypeError) as e:
                raise EdgekitError(f"{mp}: malformed manifest ({e})") from None
        from edgekit.models.source import open_checkpoint

        ck = open_checkpoint(str(p))
        return Subject(
            ck.path,
            "checkpoint",
            _checkpoint_format(ck.path),
            ck.entry.name,
            _dir_size(ck.path),
            None,
            ck.entry,
        )
    if p.exists():
        raise EdgekitError(f"{p}: not a file or a directory")
    if arg.endswith((".gguf", ".json", ".safetensors")) or arg.startswith((".", "/", "~")):
        raise EdgekitError(f"{arg}: no such file or directory")
    from edgekit.models.source import open_checkpoint

    ck = open_checkpoint(arg)
    return Subject(
        ck.path, "checkpoint", _checkpoint_format(ck.path), ck.entry.name, _dir_size(ck.path), None, ck.entry
    )


def _dir_size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file() and f.suffix == ".safetensors")


def _checkpoint_format(d: Path) -> str:
    """bf16 for a plain checkpoint; the quantization family when config.json names one."""
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return "bf16"
    q = cfg.get("quantization_config") or {}
    qm = str(q.get("quant_method", "")).lower()
    if qm in ("gptq", "awq"):
        return f"{qm}:w{q.get('bits', 4)}g{q.get('group_size', 128)}"
    if qm in ("fp8", "compressed-tensors"):
        return "fp8:dynamic"
    return "bf16"


def _entry_from_source(src: dict):
    from edgekit.models.catalogue import resolve

    path = src.get("path")
    if path and (Path(path) / "config.json").is_file():
        e = _entry_from_dir(Path(path))
        if e is not None:
            return e
    for key in (src.get("name"), src.get("hub_id")):
        if key:
            try:
                return resolve(key)
            except EdgekitError:
                continue
    return None


def _entry_from_dir(d: Path):
    from edgekit.models.catalogue import from_local

    try:
        return from_local(d)
    except EdgekitError:
        return None


# ---- running it ---------------------------------------------------------------------------


def choose_runtime(subject: Subject, runtime: str | None, device: str | None, host):
    """The registry entry that will serve `subject`; one-line errors for every way it cannot."""
    from edgekit.runtimes import registry

    if runtime:
        info = registry.find(runtime)
        if info.module is not None and info.formats and not info.serves(subject.format):
            serving = [
                i.name
                for i in registry.discover(check=False)
                if i.module is not None and i.serves(subject.format)
            ]
            raise EdgekitError(
                f"runtime {info.name} does not serve {subject.format} (it serves {', '.join(info.formats)})",
                f"runtimes that do: {', '.join(serving)}" if serving else "see `edgekit runtimes`",
            )
        if not info.available:
            raise registry.RuntimeUnavailable(info)
    else:
        preferred = None
        try:
            from edgekit.formats import get_format

            kind = "gpu" if (device == "cuda" or (device is None and host.gpus)) else "cpu"
            preferred = get_format(subject.format).runtime_for(kind)
        except EdgekitError:
            pass
        info = registry.for_format(subject.format, preferred)
    if device and device not in info.devices:
        raise EdgekitError(
            f"runtime {info.name} does not run on {device} (it runs on {', '.join(info.devices)})"
        )
    return info


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


def measure(runtime: str, path: Path, settings: Settings) -> dict:
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
) -> BenchResult:
    """Measure `arg` (ARTIFACT|MODEL) on this machine. `on_start(subject, runtime_info)` is called
    once everything is checked, just before the measuring process starts."""
    from edgekit.bench import device as devmod

    settings = settings or Settings()
    settings.check()
    subject = resolve_subject(arg)
    host = devmod.detect(label)
    info = choose_runtime(subject, runtime, settings.device, host)
    if info.name == "vllm":  # a server: measured as a serving benchmark, its whole process tree
        from edgekit.bench.serve import serve_bench

        return serve_bench(
            arg,
            settings,
            label=label,
            save=save,
            store=store,
            on_start=(lambda s, i, _log: on_start(s, i)) if on_start else None,
        )
    if settings.device == "cpu" or "cuda" not in info.devices or not host.gpus:
        devmod.planner_target(host, "cpu")  # measure (or read) the bandwidth now, not beside the benchmark
    if on_start is not None:
        on_start(subject, info)
    raw = measure(info.name, subject.path, settings)
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
            "edgekit": __version__,
            "python": platform.python_version(),
            **_parent_versions(),
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


def _parent_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("nvidia-ml-py",):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def planner_figures(
    subject: Subject,
    target,
    target_note: str,
    settings: Settings,
    batches: list[BatchResult],
    measured_peak: int | None,
    device: str,
    runtime: str | None = None,
) -> dict:
    """Roofline per batch (filled into `batches`) and the memory prediction against the peak."""
    from edgekit.formats import get_format
    from edgekit.plan import plan

    def skip(why: str) -> dict:
        for b in batches:
            if b.measured:
                b.roofline = {"reason": why}
        return {"reason": why}

    if subject.entry is None:
        return skip("the source model is unknown (no manifest naming it)")
    if target is None:
        return skip(target_note)
    try:
        fmt = get_format(subject.format)
        if runtime == "onnxruntime" and fmt.family == "bf16":
            fmt = get_format("onnx:fp32")  # onnxruntime runs a checkpoint as its fp32 export
    except EdgekitError:
        return skip(f"the planner has no size model for '{subject.format}'")
    decode_ctx = settings.prompt_tokens + settings.gen_tokens // 2
    for b in batches:
        if not b.measured:
            continue
        rows = plan(
            subject.entry,
            target,
            ctx=decode_ctx,
            batch=b.batch,
            formats=[fmt],
            prompt_tokens=settings.prompt_tokens,
        ).rows
        if not rows:
            b.roofline = {"reason": f"the planner says {target.name} does not run {fmt.id}"}
            continue
        bound = rows[0].decode_tok_s
        med = b.decode_tok_s.median
        b.roofline = {
            "bound_tok_s": round(bound, 2),
            "bytes_per_token": round(rows[0].bytes_per_token),
            "bandwidth_gbs": round(target.device.bandwidth_bytes_s / 1e9, 2),
            "kv_context": decode_ctx,
            "fraction": round(med / bound, 4) if math.isfinite(med) and bound > 0 else None,
        }
    big = max((b.batch for b in batches if b.measured), default=1)
    rows = plan(
        subject.entry,
        target,
        ctx=settings.ctx,
        batch=big,
        formats=[fmt],
        prompt_tokens=settings.prompt_tokens,
    ).rows
    out = {
        "target": target.name,
        "target_note": target_note,
        "bandwidth_gbs": round(target.device.bandwidth_bytes_s / 1e9, 2),
        "bandwidth_source": next(
            (n for n in target.device.notes if n.startswith("memory bandwidth")), target.device.source
        ),
    }
    if not rows:
        out["reason"] = f"the planner says {target.name} does not run {fmt.id}"
        return out
    r = rows[0]
    predicted = r.per_device.total
    out.update(
        {
            "runtime_planned": r.runtime,
            "ctx": settings.ctx,
            "batch": big,
            "predicted_weights_bytes": r.per_device.weights,
            "predicted_kv_bytes": r.per_device.kv_cache,
            "predicted_overhead_bytes": r.per_device.overhead,
            "predicted_peak_bytes": predicted,
            "measured_peak_bytes": measured_peak,
            "measured_what": "peak VRAM" if device == "cuda" else "peak RSS",
            "predicted_over_measured": round(predicted / measured_peak, 4) if measured_peak else None,
        }
    )
    if subject.size_bytes and subject.kind == "artifact" and subject.format.startswith("gguf:"):
        out["planned_weights_over_file"] = round(r.weights_bytes / subject.size_bytes, 4)
    return out
