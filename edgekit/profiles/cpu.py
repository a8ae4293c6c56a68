"""This machine as a target: cores, RAM and ISA flags read from the OS, memory bandwidth
measured by a short streaming probe and cached per machine (or set by the user).

The peak FLOPS figure is computed, not measured: cores x clock x FP32 FLOP per cycle of
the widest FMA unit the flags report. It only feeds the prefill estimate.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass

from edgekit import atomic
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir
from edgekit.profiles.device import GIB, Device

# ISA flags that matter for llama.cpp / torch CPU kernels
_INTERESTING = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)


@dataclass(frozen=True)
class CpuFacts:
    model: str
    logical_cores: int
    physical_cores: int
    mhz: float
    ram_bytes: int
    ram_available_bytes: int
    flags: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        key = f"{platform.node()}|{self.model}|{self.logical_cores}|{self.ram_bytes // GIB}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def fp32_flops_per_cycle(self) -> int:
        f = set(self.flags)
        if "avx512f" in f:
            return 64  # two 16-lane FMA units
        if "avx2" in f and "fma" in f:
            return 32  # two 8-lane FMA units
        if "asimd" in f:
            return 16  # two 4-lane NEON FMA pipes
        return 8


def read_cpu_facts() -> CpuFacts:
    model, mhz, flags, physical = platform.processor() or platform.machine(), 0.0, set(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            phys_id = core_id = None
            for line in fh:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name" and v:
                    model = v
                elif k == "cpu MHz" and not mhz:
                    mhz = _float(v)
                elif k in ("flags", "Features"):
                    flags.update(v.split())
                elif k == "physical id":
                    phys_id = v
                elif k == "core id":
                    core_id = v
                    physical.add((phys_id, core_id))
    except OSError:
        pass
    total, avail = _meminfo()
    logical = os.cpu_count() or 1
    return CpuFacts(
        model=model,
        logical_cores=logical,
        physical_cores=len(physical) or logical,
        mhz=mhz or 2000.0,
        ram_bytes=total,
        ram_available_bytes=avail,
        flags=tuple(sorted(f for f in flags if f in _INTERESTING)),
    )


def detect_cpu(probe: bool = True) -> Device:
    facts = read_cpu_facts()
    bw, bw_source = bandwidth(facts, probe=probe)
    peak = facts.logical_cores * facts.mhz * 1e6 * facts.fp32_flops_per_cycle() / 1e12
    return Device(
        name="cpu",
        description=f"{facts.model} ({facts.logical_cores} threads, {facts.ram_bytes / GIB:.0f} GiB RAM)",
        kind="cpu",
        memory_bytes=facts.ram_bytes,
        bandwidth_bytes_s=bw,
        tflops={"fp32": round(peak, 3)},
        isa=facts.flags,
        source="detected",
        notes=(
            f"memory bandwidth: {bw_source}",
            f"fp32 peak computed as {facts.logical_cores} threads x {facts.mhz:.0f} MHz x "
            f"{facts.fp32_flops_per_cycle()} FLOP/cycle",
        ),
    )


def bandwidth(facts: CpuFacts, probe: bool = True) -> tuple[float, str]:
    """Bytes/s: the user's setting, else the cached probe, else a fresh probe."""
    env = os.environ.get("EDGEKIT_CPU_BANDWIDTH_GBS")
    if env:
        try:
            return float(env) * 1e9, "set by EDGEKIT_CPU_BANDWIDTH_GBS"
        except ValueError:
            raise EdgekitError(f"EDGEKIT_CPU_BANDWIDTH_GBS={env!r} is not a number") from None
    cached = _read_cache(facts)
    if cached:
        return cached[
            "read_bytes_s"
        ], f"probe of {cached['when']} (cached; `edgekit targets probe` re-measures)"
    if not probe:
        return 10e9, "not measured yet; assumed 10 GB/s"
    result = run_probe()
    save_probe(facts, result)
    return result["read_bytes_s"], "measured now by a streaming-read probe"


def run_probe(size_mib: int = 128, repeats: int = 4, threads: int | None = None) -> dict:
    """Stream over buffers larger than the last-level cache from every core.

    Read bandwidth (a reduction over the buffer) is what decoding needs: weights are only
    read. Copy bandwidth (read + write, STREAM's convention) is reported alongside.
    """
    import threading

    import numpy as np

    threads = threads or os.cpu_count() or 1
    n = size_mib * 1024 * 1024 // 8 // threads
    srcs = [np.ones(n, dtype=np.float64) for _ in range(threads)]
    dsts = [np.empty_like(s) for s in srcs]

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            barrier = threading.Barrier(threads)
            ts = [threading.Thread(target=_worker, args=(barrier, fn, i)) for i in range(threads)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best = min(best, time.perf_counter() - t0)
        return best

    read_t = timed(lambda i: srcs[i].sum())
    copy_t = timed(lambda i: np.copyto(dsts[i], srcs[i]))
    total = n * 8 * threads
    return {
        "read_bytes_s": total / read_t,
        "copy_bytes_s": 2 * total / copy_t,
        "buffer_mib": size_mib,
        "threads": threads,
        "repeats": repeats,
        "numpy": np.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }


def _worker(barrier, fn, i):
    barrier.wait()
    fn(i)


def _cache_path(facts: CpuFacts):
    return cache_dir() / "cpu" / f"bandwidth-{facts.fingerprint}.json"


def _read_cache(facts: CpuFacts) -> dict | None:
    p = _cache_path(facts)
    try:
        d = json.loads(p.read_text())
        if isinstance(d.get("read_bytes_s"), int | float) and d["read_bytes_s"] > 0:
            return d
    except (OSError, ValueError):
        pass
    return None


def save_probe(facts: CpuFacts, result: dict) -> None:
    try:
        atomic.write_json(_cache_path(facts), result)
    except OSError:
        pass  # a read-only cache only costs a re-probe next time


def _meminfo() -> tuple[int, int]:
    total = avail = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if not total:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 * GIB
    return total, avail or total


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return 0.0
