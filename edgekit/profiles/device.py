"""One kind of device as data: memory, bandwidth, peak TFLOPS per dtype, compute capability or
ISA flags. Built from a TOML file (edgekit.profiles.target) or detected (edgekit.profiles.cpu)."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # gpu | cpu
    memory_bytes: int
    bandwidth_bytes_s: float
    tflops: dict[str, float]
    compute_capability: tuple[int, int] | None = None
    isa: tuple[str, ...] = ()
    interconnect: str | None = None
    link_gbs: float | None = None
    formats_unsupported: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source: str = "builtin"
    notes: tuple[str, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def peak_flops(self, dtype: str) -> float:
        t = self.tflops
        v = t.get(dtype) or t.get("fp16") or t.get("bf16") or t.get("fp32") or 0.0
        return v * 1e12
