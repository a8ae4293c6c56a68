"""The one memory tracker of edgekit bench: resident memory from /proc and GPU memory per
process through NVML (edgekit.nvml), for the measuring process itself (edgekit.bench._child)
or a server's whole process tree (edgekit.bench.serve), sampled on demand or in a thread.

NVML keeps no per-process peak, so a peak is the largest sample."""

from __future__ import annotations

import os
import resource
import sys
import threading
from typing import Any

from edgekit.nvml import nvml_handles, shutdown


def status_bytes(key: str, pid: int | str = "self") -> int | None:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in bytes, or None where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_bytes(pid: int | str = "self") -> int:
    return status_bytes("VmRSS", pid) or 0


def peak_rss_bytes() -> tuple[int, str]:
    """This process's peak resident set: VmHWM (Linux), else ru_maxrss."""
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM from /proc/self/status"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "getrusage ru_maxrss"


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class MemorySampler:
    """Memory of process `pid` (default: this one), or of its whole tree with `tree=True`
    (API server, engine core, workers): the summed RSS, and per GPU the memory NVML shows for
    those processes (and the device's total use, which includes other processes).

    `sample()` takes one sample and returns the processes' GPU bytes now; `start()` samples
    every `interval` s in a thread until `stop()`. `peak` is the largest GPU total."""

    def __init__(self, pid: int | None = None, tree: bool = False, interval: float = 0.2):
        self.pid = pid or os.getpid()
        self.tree, self.interval = tree, interval
        self.peak = 0
        self.peak_rss = 0
        self.samples = 0
        self.nv, self.handles, self.why = nvml_handles()
        self.peak_gpu = [0] * len(self.handles)  # the processes', per GPU
        self.peak_gpu_device = [0] * len(self.handles)  # everything on the GPU
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ok(self) -> bool:
        return self.nv is not None and bool(self.handles)

    def sample(self) -> int:
        pids = process_tree(self.pid) if self.tree else [self.pid]
        if self.tree:
            self.peak_rss = max(self.peak_rss, sum(current_rss_bytes(p) for p in pids))
        mine = set(pids)
        total = 0
        for i, h in enumerate(self.handles):
            try:
                procs = self.nv.nvmlDeviceGetComputeRunningProcesses(h)
            except Exception:
                continue
            used = sum(int(p.usedGpuMemory or 0) for p in procs if p.pid in mine)
            total += used
            self.peak_gpu[i] = max(self.peak_gpu[i], used)
            try:
                self.peak_gpu_device[i] = max(
                    self.peak_gpu_device[i], int(self.nv.nvmlDeviceGetMemoryInfo(h).used)
                )
            except Exception:
                pass
        self.samples += 1
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="edgekit-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.sample()
        except Exception:
            pass
        self.close()

    def close(self) -> None:
        shutdown(self.nv)
        self.nv, self.handles = None, []

    def to_dict(self) -> dict[str, Any]:
        gpus = [
            {"index": i, "peak_bytes": p, "device_peak_bytes": d}
            for i, (p, d) in enumerate(zip(self.peak_gpu, self.peak_gpu_device, strict=True))
        ]
        return {
            "peak_rss_bytes": self.peak_rss,
            "gpus": gpus,
            "samples": self.samples,
            "interval_s": self.interval,
            "nvml": self.why or "ok",
            "method": "sum of VmRSS over the server's process tree and NVML per-process GPU memory of those "
            "processes, sampled in a thread; the peak is the largest sample",
        }
