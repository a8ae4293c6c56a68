"""The measuring process of `edgekit bench`: `python -m edgekit.bench._child SPEC.json OUT.json`.

A fresh process per benchmark gives a clean peak-memory figure (VmHWM counts this model
only) and leaves no engine state behind. It imports only the runtime it measures; the
timed loop is the runtime's `generate_tokens`, which does no per-token work of ours.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from edgekit.artifact import tool_versions
from edgekit.bench.memory import current_rss_bytes, peak_rss_bytes


def prompt_tokens(session, n: int) -> list[int]:
    """The first `n` tokens of edgekit's evaluation text (repeated if short)."""
    from importlib import resources

    text = resources.files("edgekit.data").joinpath("evaluation.txt").read_text(encoding="utf-8")
    toks = list(session.tokenize(text))
    if not toks:
        from edgekit.errors import EdgekitError

        raise EdgekitError("the runtime's tokenizer returned no tokens for the prompt text")
    while len(toks) < n:
        toks = toks + toks
    return toks[:n]


def measure(spec: dict) -> dict:
    from edgekit.bench.memory import MemorySampler
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.base import NotSupported
    from edgekit.runtimes.registry import get

    t0 = time.perf_counter()
    info = get(spec["runtime"])  # imports the runtime and checks available()
    import_s = time.perf_counter() - t0
    rt: Any = info.module
    # one-time work a runtime may need before it can load (onnxruntime exports a checkpoint
    # once): done before the clock starts, so load_s is what every later start costs
    options = spec.get("options") or {}  # the runtime's Options, as load() keywords
    prepare = getattr(rt, "prepare", None)
    path = prepare(spec["path"], **options) if callable(prepare) else spec["path"]
    rss_before = current_rss_bytes()
    vram = MemorySampler() if spec.get("vram", True) else None
    t0 = time.perf_counter()
    session = rt.load(path, **spec["load"], **options)
    load_s = time.perf_counter() - t0
    if not hasattr(session, "generate_tokens"):
        raise EdgekitError(f"runtime {info.name} cannot be benchmarked: its session has no generate_tokens()")
    device = getattr(session, "device", "cpu") or "cpu"
    if vram:
        vram.sample()
    runs, unsupported = [], {}
    try:
        toks = prompt_tokens(session, spec["prompt_tokens"])
        for _ in range(spec["warmup"]):
            session.generate_tokens(toks, min(spec["gen_tokens"], 16), batch=1)
        for r in range(spec["repeats"]):
            for b in spec["batches"]:
                if str(b) in unsupported:
                    continue
                try:
                    g = session.generate_tokens(toks, spec["gen_tokens"], batch=b)
                except NotSupported as e:
                    unsupported[str(b)] = e.one_line()
                    continue
                if vram:
                    vram.sample()
                runs.append(
                    {
                        "repeat": r,
                        "batch": b,
                        "prompt_tokens": g.prompt_tokens,
                        "generated_tokens": g.generated_tokens,
                        "prompt_s": g.prompt_s,
                        "decode_s": g.decode_s,
                        "batch_reported": getattr(g, "batch", 1),
                        "decode_cpu_s": (g.extra or {}).get("decode_cpu_s"),
                    }
                )
    finally:
        peak, peak_method = peak_rss_bytes()
        vram_out = _vram(vram, device)
        try:
            session.close()
        except Exception:
            pass
    return {
        "ok": True,
        "runtime": info.name,
        "runtime_version": info.version,
        "packages": tool_versions(*info.packages),
        "device": device,
        "import_s": import_s,
        "load_s": load_s,
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_rss_method": peak_method,
        "vram": vram_out,
        "runs": runs,
        "unsupported": unsupported,
        "pid": os.getpid(),
    }


def _vram(sampler, device: str) -> dict:
    out: dict[str, Any] = {"peak_bytes": None, "method": None, "note": None}
    torch = sys.modules.get("torch")
    if torch is not None and device == "cuda":
        try:
            if torch.cuda.is_initialized():
                out["torch_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
                out["torch_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
        except Exception:
            pass
    if sampler is not None and sampler.ok:
        if sampler.peak > 0 or device == "cuda":
            out["peak_bytes"] = sampler.peak
            out["method"] = (
                f"NVML per-process used memory, largest of {sampler.samples} samples (CUDA context included)"
            )
        sampler.close()
    elif device == "cuda" and "torch_max_reserved_bytes" in out:
        out["peak_bytes"] = out["torch_max_reserved_bytes"]
        out["method"] = "torch.cuda.max_memory_reserved (CUDA context not included)"
    if out["peak_bytes"] is None:
        out["note"] = "ran on the CPU" if device == "cpu" else (sampler.why if sampler else "not measured")
    return out


def main(argv: list[str]) -> int:
    spec_path, out_path = argv[1], argv[2]
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        result = measure(spec)
        rc = 0
    except Exception as e:
        from edgekit.errors import EdgekitError

        if isinstance(e, EdgekitError):
            result = {"ok": False, "kind": type(e).__name__, "error": e.one_line()}
        else:
            tb = traceback.format_exc(limit=6)
            result = {"ok": False, "kind": "internal", "error": f"{type(e).__name__}: {e}", "traceback": tb}
        rc = 3
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
