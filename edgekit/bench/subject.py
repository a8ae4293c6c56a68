"""What `edgekit bench` measures (an artifact, a checkpoint, a bare GGUF file) and what the
planner predicts for it on the target it ran on (roofline per batch, memory against the peak)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.bench.results import BatchResult, Settings
from edgekit.errors import EdgekitError
from edgekit.runtimes import registry

# ---- what is measured ---------------------------------------------------------------------


@dataclass
class Subject:
    path: Path
    kind: str  # artifact | checkpoint | file
    format: str  # a format id ("gguf:Q4_K_M", "bf16") or a family when the mix is unknown ("gguf")
    model: str | None
    size_bytes: int
    sha256: str | None = None
    entry: Any = None  # ModelEntry for the planner, when known
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
            src = m.source
            return Subject(
                p,
                "artifact",
                art.format,
                src.get("name"),
                art.size_bytes,
                m.sha256 or None,
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
            checkpoint_format(ck.path),
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
        ck.path, "checkpoint", checkpoint_format(ck.path), ck.entry.name, _dir_size(ck.path), None, ck.entry
    )


def _dir_size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file() and f.suffix == ".safetensors")


def checkpoint_format(d: Path) -> str:
    """The format id of a checkpoint directory, from its own files (edgekit.formats.detect_format)."""
    try:
        from edgekit.formats import detect_format
    except ImportError:  # an edgekit.formats without it yet: the same rules, here
        return _detect_format_fallback(d)
    return str(detect_format(d))


def _detect_format_fallback(d: Path) -> str:
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


def choose_runtime(subject: Subject, runtime: str | None, device: str | None, host):
    """The registry entry that will serve `subject`; one-line errors for every way it cannot."""
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
        if runtime:  # the format the runtime runs it as (onnxruntime: a checkpoint as its fp32 export)
            fmt = get_format(registry.capabilities(runtime).planned_format(fmt.id))
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
        med = b.decode_tok_s.median if b.decode_tok_s else float("nan")
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
    if subject.size_bytes and subject.kind == "artifact":
        out["planned_weights_over_file"] = round(r.weights_bytes / subject.size_bytes, 4)
    return out
