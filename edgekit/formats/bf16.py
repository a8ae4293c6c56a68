"""BF16: the unquantized checkpoint itself, the reference every candidate is measured against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.formats.base import Format, FormatFamily, Support, TensorPlan

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.target import Device


class BF16(FormatFamily, family="bf16"):
    order = 50
    description = "the unquantized BF16 safetensors checkpoint (the reference, never a candidate)"
    storage = "directory"
    is_reference = True

    def formats(self) -> list[Format]:
        return [
            Format(
                "bf16", self.name, "bf16", "unquantized BF16 safetensors", ("transformers", "vllm"), "fp16"
            )
        ]

    def tensor_plan(self, fmt: Format, arch: Arch) -> list[TensorPlan]:
        return [TensorPlan(t.name, t.role, t.shape, "bf16", 2 * t.n_elements) for t in arch.tensors()]

    def support(self, fmt: Format, device: Device) -> Support:
        if device.kind == "cpu":
            return Support("native", "transformers on CPU")
        cc = device.compute_capability or (0, 0)
        return (
            Support("native", "BF16 tensor cores")
            if cc >= (8, 0)
            else Support("slow", "no BF16 below CC 8.0")
        )

    def runtime_for(self, fmt: Format, device_kind: str) -> str:
        return "vllm" if device_kind == "gpu" else "transformers"

    def unbuildable(self, fmt: Format, entry: object) -> str:
        return "bf16 is the reference every candidate is measured against, not a candidate"

    def detect(self, path: Path) -> str | None:
        # a Hugging Face checkpoint directory with no quantization_config
        if not (path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))):
            return None
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return "bf16"
        return None if isinstance(cfg, dict) and cfg.get("quantization_config") else "bf16"
