"""The machine a benchmark runs on: CPU model, cores, RAM (edgekit.profiles.cpu), GPUs through
NVML (edgekit.nvml: absent or failing means "no GPU", with the reason), and
the planner target that gives the roofline (the detected CPU, or a GPU profile by name).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from dataclasses import asdict, dataclass, field

from edgekit.bench.memory import MemorySampler
from edgekit.nvml import nvml_handles as nvml_handles  # re-exported: the one NVML opener
from edgekit.nvml import open_nvml

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None
    driver: str | None = None
    profile: str | None = None  # the edgekit target whose figures describe it (rtx4090, h100-sxm...)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["compute_capability"] = (
            ".".join(map(str, self.compute_capability)) if self.compute_capability else None
        )
        d["memory_gib"] = round(self.memory_bytes / GIB, 2)
        return d


@dataclass(frozen=True)
class HostInfo:
    label: str
    cpu_model: str
    logical_cores: int
    physical_cores: int
    ram_bytes: int
    isa: tuple[str, ...]
    gpus: tuple[Gpu, ...]
    gpu_note: str  # how the GPUs were found, or why none was
    os: str
    python: str
    fingerprint: str  # stable per machine: groups results of one device in the store
    extra: dict = field(default_factory=dict)

    def short(self) -> str:
        gpu = ", ".join(f"{g.name} ({g.memory_bytes / GIB:.0f} GiB)" for g in self.gpus) or "no GPU"
        return f"{self.cpu_model}, {self.logical_cores} threads, {self.ram_bytes / GIB:.0f} GiB RAM; {gpu}"

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "fingerprint": self.fingerprint,
            "cpu": {
                "model": self.cpu_model,
                "logical_cores": self.logical_cores,
                "physical_cores": self.physical_cores,
                "isa": list(self.isa),
            },
            "ram_bytes": self.ram_bytes,
            "ram_gib": round(self.ram_bytes / GIB, 2),
            "gpus": [g.to_dict() for g in self.gpus],
            "gpu_note": self.gpu_note,
            "os": self.os,
            "python": self.python,
        }


def detect(label: str | None = None, nvml: bool = True) -> HostInfo:
    from edgekit.profiles.cpu import read_cpu_facts

    facts = read_cpu_facts()
    gpus, note = nvml_gpus() if nvml else ((), "not looked for")
    key = f"{facts.fingerprint}|" + "|".join(f"{g.name}:{g.memory_bytes}" for g in gpus)
    return HostInfo(
        label=label or os.environ.get("EDGEKIT_DEVICE_LABEL") or platform.node() or "this-machine",
        cpu_model=facts.model,
        logical_cores=facts.logical_cores,
        physical_cores=facts.physical_cores,
        ram_bytes=facts.ram_bytes,
        isa=facts.flags,
        gpus=tuple(gpus),
        gpu_note=note,
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
    )


def nvml_gpus() -> tuple[list[Gpu], str]:
    nv, why = open_nvml()
    if nv is None:
        return [], why
    out = []
    try:
        driver = _s(nv.nvmlSystemGetDriverVersion())
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = _s(nv.nvmlDeviceGetName(h))
            mem = int(nv.nvmlDeviceGetMemoryInfo(h).total)
            cc: tuple[int, int] | None
            try:
                major, minor = (int(x) for x in nv.nvmlDeviceGetCudaComputeCapability(h))
                cc = (major, minor)
            except Exception:
                cc = None
            out.append(Gpu(i, name, mem, cc, driver, match_profile(name)))
    except Exception as e:
        return out, f"NVML failed while reading devices ({e})"
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass
    return out, f"NVML, driver {driver}" if out else "NVML found no GPU"


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def match_profile(gpu_name: str) -> str | None:
    """The target whose name or alias appears in the GPU's name (longest match wins):
    "NVIDIA H100 PCIe" -> h100-pcie, "NVIDIA H100 80GB HBM3" -> h100-sxm (alias h100)."""
    from edgekit.profiles.target import all_devices

    n = _norm(gpu_name)
    best, best_len = None, 0
    for dev in all_devices().values():
        if dev.kind != "gpu":
            continue
        for key in (dev.name, *dev.aliases):
            k = _norm(key)
            if k and k in n and len(k) > best_len:
                best, best_len = dev.name, len(k)
    return best


# the memory of this process as NVML sees it (CUDA context included), sampled on demand
VramSampler = MemorySampler


def planner_target(host: HostInfo, device_kind: str, probe: bool = True):
    """(Target, note) for the roofline and the memory prediction, or (None, why not)."""
    from edgekit.profiles.target import get_target

    if device_kind == "cpu":
        return get_target("cpu") if probe else _cpu_target_no_probe(), "this CPU (detected)"
    if not host.gpus:
        return None, "ran on a GPU that NVML does not show"
    g = host.gpus[min(_visible_index(), len(host.gpus) - 1)]
    if g.profile is None:
        return None, (
            f"no target profile matches '{g.name}': add one (`edgekit targets dir`) "
            "to get its bandwidth and the roofline"
        )
    return get_target(g.profile), f"{g.profile} (matched from '{g.name}')"


def _cpu_target_no_probe():
    from edgekit.profiles.cpu import detect_cpu
    from edgekit.profiles.target import Target

    return Target("cpu", detect_cpu(probe=False))


def _visible_index() -> int:
    """The NVML index of the first GPU CUDA uses (CUDA_VISIBLE_DEVICES as a plain index list)."""
    v = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(v) if v.isdigit() else 0
