"""ONNX: a torch.onnx export of the checkpoint with an explicit KV cache, served by onnxruntime;
fp32, or MatMulNBits int8 / int4 weights in blocks of 32 (edgekit.quantize.onnx_export)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.formats.base import (
    ArtifactLines,
    BuildOptions,
    Format,
    FormatFamily,
    Support,
    TensorPlan,
    quantized_matrix,
)

if TYPE_CHECKING:
    from edgekit.artifact import Artifact, Manifest
    from edgekit.models.arch import Arch
    from edgekit.models.catalogue import ModelEntry
    from edgekit.profiles.target import Device
    from edgekit.progress import Progress

BLOCK = 32
_VARIANTS = (
    ("fp32", 32, "FP32 ONNX graph with KV cache (torch.onnx export)"),
    ("int8", 8, "ONNX, MatMulNBits int8 weights, blocks of 32, symmetric"),
    ("int4", 4, "ONNX, MatMulNBits int4 weights, blocks of 32, with zero points"),
)


class ONNX(FormatFamily, family="onnx"):
    order = 60
    description = "ONNX graph with an explicit KV cache for onnxruntime (fp32, int8/int4 MatMulNBits)"
    storage = "directory"

    def formats(self) -> list[Format]:
        return [
            Format(
                f"onnx:{v}",
                self.name,
                v,
                what,
                ("onnxruntime",),
                "fp16",
                bits=bits,
                group=BLOCK if bits < 32 else 0,
                symmetric=bits != 4,
            )
            for v, bits, what in _VARIANTS
        ]

    def tensor_plan(self, fmt: Format, arch: Arch) -> list[TensorPlan]:
        out = []
        for t in arch.tensors():
            n = t.n_elements
            # onnxruntime holds the graph in fp32; MatMulNBits quantizes the linear layers only
            if fmt.bits == 32 or not quantized_matrix(t):
                out.append(TensorPlan(t.name, t.role, t.shape, "fp32", 4 * n))
                continue
            blocks = n // BLOCK + (1 if n % BLOCK else 0)
            nbytes = n * fmt.bits // 8 + 4 * blocks + (blocks // 2 if not fmt.symmetric else 0)
            out.append(TensorPlan(t.name, t.role, t.shape, f"int{fmt.bits}-b{BLOCK}", nbytes))
        return out

    def support(self, fmt: Format, device: Device) -> Support:
        if device.kind == "cpu":
            return Support("native", "onnxruntime CPU kernels (MatMulNBits for int8/int4)")
        return Support("slow", "onnxruntime CUDA runs the fp32 graph: no fp16 export yet")

    def runtime_for(self, fmt: Format, device_kind: str) -> str:
        return "onnxruntime"

    def unbuildable(self, fmt: Format, entry: ModelEntry) -> str:
        from edgekit.models.arch import arch_family, model_types_supported_by
        from edgekit.quantize import onnx_export

        if not arch_family(entry.arch).supports("onnx"):
            tested = ", ".join(model_types_supported_by("onnx"))
            return f"the ONNX export is not tested on {entry.arch.family} (it is on {tested})"
        if entry.arch.is_moe and fmt.bits < 32:
            return f"{fmt.id} is not offered for a mixture-of-experts model (its experts would stay fp32)"
        try:
            onnx_export.require_export_tools(need_torch=True)
        except EdgekitError as e:
            return e.one_line()
        return ""

    def check_options(self, fmt: Format, opts: BuildOptions) -> None:
        if opts.calibration:
            raise EdgekitError(f"{fmt.id} is data-free: it takes no calibration text")
        super().check_options(fmt, opts)

    def build(
        self,
        checkpoint: Any,
        fmt: Format,
        out_dir: Path,
        opts: BuildOptions,
        progress: Progress | None = None,
    ) -> Artifact:
        from edgekit.quantize import onnx_export

        dest = out_dir / onnx_export.default_name(checkpoint.entry.name, fmt.variant)
        return onnx_export.export(
            checkpoint,
            dest,
            precision=fmt.variant,
            force=opts.force,
            say=progress.say if progress else None,
            bits_per_weight=fmt.bits_per_weight(checkpoint.entry.arch),
        )

    def describe(self, manifest: Manifest) -> ArtifactLines:
        return ArtifactLines(
            [
                ("layout", f"ONNX ({manifest.format}), runs in onnxruntime"),
                ("sha256", f"{manifest.sha256} (over the directory's files)"),
            ]
        )

    def detect(self, path: Path) -> str | None:
        from edgekit.quantize import onnx_export

        if not (path.is_dir() and onnx_export.is_onnx_dir(path)):
            return None
        precision = onnx_export.read_info(path).get("precision") or "fp32"
        return f"onnx:{precision}"
