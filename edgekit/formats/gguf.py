"""GGUF: llama.cpp's single-file format, its k-quant and legacy mixes.

Sizes follow llama.cpp's own per-tensor mix rules (edgekit.quantize.gguf_mix: Q6_K output,
wider halves of attn_v / ffn_down in the _M mixes, fallbacks for rows that are not a multiple
of 256); builds go through edgekit's one-pass converter with an optional importance matrix;
llama.cpp serves them on every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.formats.base import ArtifactLines, BuildOptions, Format, FormatFamily, Support, TensorPlan
from edgekit.gguf_io import ggml_types
from edgekit.quantize.gguf_auto import parse_budget, plan_types
from edgekit.quantize.gguf_mix import MIX_DEFAULT, assign_types

if TYPE_CHECKING:
    from edgekit.artifact import Artifact, Manifest
    from edgekit.models.arch import Arch
    from edgekit.models.catalogue import ModelEntry
    from edgekit.profiles.target import Device
    from edgekit.progress import Progress

# the mixes `edgekit plan` offers (every llama.cpp mix in MIX_DEFAULT can be built)
PLANNED: tuple[str, ...] = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S")
PLANNED += ("Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")
# the main job's candidates (the unquantized F16/BF16 are the reference, not candidates)
# gguf:auto@BUDGET (normalised to upper case before parse)
AUTO = "AUTO@"
LADDER = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")


class GGUF(FormatFamily, family="gguf"):
    order = 10
    description = "llama.cpp GGUF file: k-quant and legacy block mixes, optional importance matrix"
    storage = "file"
    options = frozenset({"calibration", "imatrix", "tensor_types", "threads"})

    def _make(self, mix: str) -> Format:
        return Format(
            f"gguf:{mix}",
            self.name,
            mix,
            f"llama.cpp {mix} mix",
            ("llama.cpp",),
            "int8" if "_" in mix else "fp16",
        )

    def formats(self) -> list[Format]:
        return [self._make(m) for m in PLANNED]

    def normalise(self, variant: str) -> str:
        return variant.upper()

    def parse(self, variant: str, spec: str) -> Format | None:
        if variant.startswith(AUTO):  # gguf:auto@BUDGET, a measured mix (edgekit.quantize.gguf_auto)
            b = parse_budget(variant[len(AUTO) :])
            desc = f"measured llama.cpp mix under {b.describe()}"
            return Format(
                f"gguf:auto@{b.spelling}", self.name, AUTO + b.spelling, desc, ("llama.cpp",), "int8"
            )
        return self._make(variant) if variant in MIX_DEFAULT else None

    def tensor_plan(self, fmt: Format, arch: Arch) -> list[TensorPlan]:
        tensors = arch.tensors()
        if fmt.variant.startswith(AUTO):
            types = plan_types(arch, parse_budget(fmt.variant[len(AUTO) :]), fmt.id)
        else:
            types = assign_types(tensors, fmt.variant, arch)
        return [
            TensorPlan(
                t.name, t.role, t.shape, types[t.name], ggml_types.tensor_nbytes(t.shape, types[t.name])
            )
            for t in tensors
        ]

    def support(self, fmt: Format, device: Device) -> Support:
        if device.kind == "cpu":
            return Support("native", "llama.cpp CPU kernels")
        cc = device.compute_capability or (0, 0)
        return (
            Support("native", "llama.cpp CUDA kernels") if cc >= (5, 0) else Support("no", "needs CC >= 5.0")
        )

    def runtime_for(self, fmt: Format, device_kind: str) -> str:
        return "llama.cpp"

    def ladder(self, device: Device) -> list[Format]:
        return [self._make(m) for m in LADDER]

    def unbuildable(self, fmt: Format, entry: ModelEntry) -> str:
        from edgekit.models.arch import arch_family, model_types_supported_by

        arch = entry.arch
        if arch_family(arch).supports("gguf"):
            return ""
        return (
            f"no GGUF converter for {arch.family} "
            f"(edgekit converts {', '.join(model_types_supported_by('gguf'))})"
        )

    def build(
        self,
        checkpoint: Any,
        fmt: Format,
        out_dir: Path,
        opts: BuildOptions,
        progress: Progress | None = None,
    ) -> Artifact:
        from edgekit.quantize.gguf_build import build_gguf

        if fmt.variant.startswith(AUTO):
            from edgekit.quantize.gguf_auto import build_auto

            return build_auto(
                checkpoint,
                parse_budget(fmt.variant[len(AUTO) :]),
                fmt.id,
                out_dir,
                imatrix=opts.imatrix,
                calibration=opts.calibration,
                threads=opts.threads,
                force=opts.force,
                progress=progress,
            )
        return build_gguf(
            checkpoint,
            fmt.variant,
            out_dir,
            imatrix=opts.imatrix,
            calibration=opts.calibration,
            overrides=list(opts.tensor_types),
            threads=opts.threads,
            force=opts.force,
            progress=progress,
        )

    def describe(self, manifest: Manifest) -> ArtifactLines:
        types = manifest.details.get("tensor_types") or {}
        r = manifest.recipe
        out = ArtifactLines(
            [
                ("tensor types", ", ".join(f"{k} x{v}" for k, v in types.items())),
                ("importance", r.get("imatrix") or "none"),
                ("sha256", manifest.sha256),
            ]
        )
        if r.get("tensor_type_file"):
            out.lines.append(("recipe", f"{r['tensor_type_file']}  ({r.get('reproduce')})"))
        unseen = (r.get("imatrix_summary") or {}).get("unseen_experts")
        if unseen:
            out.warnings.append(f"experts without calibration tokens: {unseen}")
        return out

    def detect(self, path: Path) -> str | None:
        # a bare .gguf file: its mix is in the header, but without a manifest the source model
        # is unknown anyway, so the family is enough to pick the runtime
        return self.name if path.is_file() and path.suffix.lower() == ".gguf" else None
