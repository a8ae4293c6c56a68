"""GPTQ, AWQ and FP8 as compressed-tensors checkpoints (llm-compressor writes them, vLLM
serves them natively on GPUs, transformers loads them on a CPU).

Three families share one storage and one producer: quantized linear layers, with the
embeddings, lm_head, norms and MoE routers kept in BF16.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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
    from edgekit.models.arch import Arch, Tensor
    from edgekit.models.catalogue import ModelEntry
    from edgekit.profiles.target import Device
    from edgekit.progress import Progress

_INT_RE = re.compile(r"^w(\d+)g(\d+)$")
_RUNTIMES = ("vllm", "transformers")


class CompressedTensors(FormatFamily):
    """What GPTQ, AWQ and FP8 share; each subclass names its recipe module."""

    storage = "directory"
    options = frozenset({"calibration", "samples"})
    recipe_module: ClassVar[str] = ""  # edgekit.quantize.<module>: the llm-compressor modifier

    def runtime_for(self, fmt: Format, device_kind: str) -> str:
        return "vllm" if device_kind == "gpu" else "transformers"

    def tensor_plan(self, fmt: Format, arch: Arch) -> list[TensorPlan]:
        return [self._plan(fmt, t) for t in arch.tensors()]

    def _plan(self, fmt: Format, t: Tensor) -> TensorPlan:
        n = t.n_elements
        if not quantized_matrix(t):
            return TensorPlan(t.name, t.role, t.shape, "bf16", 2 * n)
        return self._quantized(fmt, t, t.shape[0], n // t.shape[0])

    def _quantized(self, fmt: Format, t: Tensor, cols: int, rows: int) -> TensorPlan:
        raise NotImplementedError

    def ladder(self, device: Device) -> list[Format]:
        # on a GPU, wherever the device's kernels run them natively; on a CPU only when named
        if device.kind != "gpu":
            return []
        return [f for f in self.ladder_formats() if self.support(f, device).level == "native"]

    def ladder_formats(self) -> list[Format]:
        return self.formats()

    # ---- building ------------------------------------------------------------------

    def _module(self) -> Any:
        import importlib

        return importlib.import_module(f"edgekit.quantize.{self.recipe_module}")

    def takes_calibration(self, fmt: Format) -> bool:
        return bool(self._module().NEEDS_CALIBRATION)

    def check_shapes(self, fmt: Format, entry: ModelEntry) -> None:
        """Raise a one-line error, naming what works, when the model's layer shapes do not
        divide into the format's groups (before the producer fails half-way)."""

    def check_architecture(self, fmt: Format, entry: ModelEntry) -> None:
        from edgekit.models.arch import arch_family, model_types_supported_by

        impl = arch_family(entry.arch)
        if not impl.supports("llm-compressor"):
            hint = (
                "gguf:Q4_K_M and the other gguf:* formats support it"
                if impl.supports("gguf")
                else f"edgekit quantizes {', '.join(model_types_supported_by('llm-compressor'))} this way"
            )
            raise EdgekitError(f"{fmt.id} is not available for architecture '{entry.arch.family}'", hint)

    def refuse_build(self, fmt: Format, entry: ModelEntry) -> None:
        from edgekit.quantize import compressed

        self.check_architecture(fmt, entry)
        compressed.check_family(entry.arch, self._module().METHOD)  # the family's own refusal
        self.check_shapes(fmt, entry)
        compressed.require_llmcompressor()

    def unbuildable(self, fmt: Format, entry: ModelEntry) -> str:
        try:
            self.refuse_build(fmt, entry)
        except EdgekitError as e:
            return e.one_line()
        return ""

    def check_options(self, fmt: Format, opts: BuildOptions) -> None:
        if opts.calibration and not self.takes_calibration(fmt):
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
        from edgekit.quantize import compressed

        return compressed.build(
            checkpoint,
            fmt,
            self._module(),
            out_dir,
            calibration=opts.calibration,
            samples=opts.samples,
            force=opts.force,
            progress=progress,
        )

    # ---- artifacts -----------------------------------------------------------------

    def describe(self, manifest: Manifest) -> ArtifactLines:
        r = manifest.recipe
        calib = r.get("calibration") or "none (data-free)"
        if r.get("calibration"):
            calib += f", {r.get('calibration_samples')} windows, {r.get('calibration_tokens')} tokens"
        out = ArtifactLines(
            [
                ("layout", f"compressed-tensors ({r.get('modifier')}, llm-compressor)"),
                ("calibration", calib),
                ("sha256", f"{manifest.sha256} (over the directory's files)"),
            ]
        )
        unseen = (r.get("expert_coverage") or {}).get("unseen_experts")
        if unseen:
            out.warnings.append(f"experts that no calibration token was routed to: {unseen}")
        return out

    def detect(self, path: Path) -> str | None:
        q = _quantization_config(path)
        return self.detect_config(q) if q else None

    def detect_config(self, q: dict[str, Any]) -> str | None:
        return None


def _quantization_config(path: Path) -> dict[str, Any] | None:
    if not path.is_dir():
        return None
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    q = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    return q if isinstance(q, dict) else None


def _ct_weights(q: dict[str, Any]) -> dict[str, Any]:
    """The weight scheme of a compressed-tensors config's first group."""
    if str(q.get("quant_method", "")).lower() != "compressed-tensors":
        return {}
    groups = q.get("config_groups") or {}
    first: Any = next(iter(groups.values()), {}) if isinstance(groups, dict) else {}
    w = first.get("weights") if isinstance(first, dict) else None
    return w if isinstance(w, dict) else {}


class _IntGroups(CompressedTensors):
    """int weights, one fp16 scale (and, asymmetric, a zero point) per group of inputs."""

    symmetric: ClassVar[bool] = True
    what: ClassVar[str] = ""

    def _make(self, bits: int, group: int) -> Format:
        sym = self.symmetric
        return Format(
            f"{self.name}:w{bits}g{group}",
            self.name,
            f"w{bits}g{group}",
            f"{self.what}: int{bits} weights, one FP16 scale{'' if sym else ' and zero point'} per {group} "
            f"inputs, BF16 activations (W{bits}A16)",
            _RUNTIMES,
            "fp16",
            bits=bits,
            group=group,
            symmetric=sym,
        )

    def parse(self, variant: str, spec: str) -> Format | None:
        m = _INT_RE.match(variant)
        if not m:
            return None
        bits, group = int(m.group(1)), int(m.group(2))
        if bits not in (2, 3, 4, 8) or group not in (32, 64, 128, 256):
            raise EdgekitError(f"format '{spec}': bits must be 2, 3, 4 or 8 and group 32, 64, 128 or 256")
        return self._make(bits, group)

    def _quantized(self, fmt: Format, t: Tensor, cols: int, rows: int) -> TensorPlan:
        groups = rows * -(-cols // fmt.group)
        nbytes = t.n_elements * fmt.bits // 8 + 2 * groups
        if not fmt.symmetric:
            nbytes += groups * fmt.bits // 8
        return TensorPlan(t.name, t.role, t.shape, f"int{fmt.bits}-g{fmt.group}", nbytes)

    def support(self, fmt: Format, device: Device) -> Support:
        if device.kind == "cpu":
            return Support("slow", "transformers on CPU dequantizes the weights: no int4/FP8 CPU kernels")
        if (device.compute_capability or (0, 0)) >= (8, 0):
            return Support("native", "Marlin int4/int8 kernels (vLLM)")
        return Support("slow", "no Marlin below CC 8.0: ExLlama/Triton fallback")

    def check_shapes(self, fmt: Format, entry: ModelEntry) -> None:
        widths = sorted({t.shape[0] for t in entry.arch.tensors() if quantized_matrix(t)})
        bad = [w for w in widths if w % fmt.group]
        if bad:
            fits = [g for g in (128, 64, 32) if all(w % g == 0 for w in widths)]
            hint = f"try {self.name}:w{fmt.bits}g{fits[0]}" if fits else "use a gguf:* format"
            raise EdgekitError(
                f"{fmt.id}: {entry.name} has layers {bad[0]} inputs wide, not a multiple "
                f"of the group size {fmt.group}",
                hint,
            )

    def detect_config(self, q: dict[str, Any]) -> str | None:
        if str(q.get("quant_method", "")).lower() == self.name:  # the classic GPTQ / AWQ layouts
            return f"{self.name}:w{q.get('bits', 4)}g{q.get('group_size', 128)}"
        return None


class GPTQ(_IntGroups, family="gptq"):
    order = 20
    description = "GPTQ int4/int8 group-wise weights (llm-compressor, compressed-tensors)"
    recipe_module = "gptq"
    what = "GPTQ (error-compensating rounding)"

    def formats(self) -> list[Format]:
        return [self._make(4, 128), self._make(8, 128)]

    def detect_config(self, q: dict[str, Any]) -> str | None:
        found = super().detect_config(q)
        if found:
            return found
        w = _ct_weights(q)  # compressed-tensors int weights: GPTQ and AWQ share the layout
        if w.get("type") == "int" and w.get("strategy") == "group":
            return f"{self.name}:w{w.get('num_bits', 4)}g{w.get('group_size', 128)}"
        return None


class AWQ(_IntGroups, family="awq"):
    order = 30
    description = "AWQ int4 group-wise weights with activation-aware scales (llm-compressor)"
    recipe_module = "awq"
    what = "AWQ (activation-aware scales)"
    # symmetric: asymmetric int4 checkpoints failed to load in transformers here (docs/dependencies.md)
    symmetric = True

    def formats(self) -> list[Format]:
        return [self._make(4, 128)]


class FP8(CompressedTensors, family="fp8"):
    order = 40
    description = "FP8 E4M3 weights, per-channel or 128x128-block scales (llm-compressor); data-free"
    recipe_module = "fp8"
    options = frozenset({"samples"})  # data-free: a calibration text is refused saying so

    _VARIANTS: ClassVar[dict[str, tuple[str, int]]] = {
        "dynamic": ("FP8 E4M3 weights with per-channel scales, dynamic per-token FP8 activations (W8A8)", 0),
        "block128": ("FP8 E4M3 weights with one scale per 128x128 block (DeepSeek/Qwen FP8 releases)", 128),
    }

    def formats(self) -> list[Format]:
        return [
            Format(f"fp8:{v}", self.name, v, what, _RUNTIMES, "fp8", bits=8, group=g)
            for v, (what, g) in self._VARIANTS.items()
        ]

    def takes_calibration(self, fmt: Format) -> bool:
        return False

    def _quantized(self, fmt: Format, t: Tensor, cols: int, rows: int) -> TensorPlan:
        n = t.n_elements
        if fmt.group:
            blocks = -(-cols // fmt.group) * -(-rows // fmt.group)
            return TensorPlan(t.name, t.role, t.shape, "fp8-b128", n + 4 * blocks)  # fp32 block scales
        return TensorPlan(t.name, t.role, t.shape, "fp8", n + 2 * rows)  # one bf16 scale per output channel

    def support(self, fmt: Format, device: Device) -> Support:
        if device.kind == "cpu":
            return Support("slow", "transformers on CPU dequantizes the weights: no int4/FP8 CPU kernels")
        cc = device.compute_capability or (0, 0)
        if fmt.group:
            if cc >= (9, 0):
                return Support("native", "block-scaled FP8 GEMM (CUTLASS/DeepGEMM)")
            if cc >= (8, 9):
                return Support("slow", "block-FP8 falls back to a slower kernel on CC 8.9 (vLLM #48035)")
            return Support("slow", "weight-only FP8 through Marlin: no FP8 tensor cores below CC 8.9")
        if cc >= (8, 9):
            return Support("native", "FP8 W8A8 on FP8 tensor cores (needs CC >= 8.9)")
        return Support("slow", "weight-only FP8 through Marlin: FP8 W8A8 needs CC >= 8.9")

    def refuse_on(self, fmt: Format, device: Device, target_name: str) -> None:
        cc = device.compute_capability or (0, 0)
        if device.kind == "gpu" and not fmt.group and cc < (8, 9):
            have = ".".join(map(str, cc))
            raise EdgekitError(
                f"{fmt.id} (FP8 W8A8) needs compute capability >= 8.9; {target_name} has {have}",
                "use gptq:w8g128 or gguf:Q8_0 for 8-bit weights there",
            )
        super().refuse_on(fmt, device, target_name)

    def check_shapes(self, fmt: Format, entry: ModelEntry) -> None:
        if not fmt.group:
            return
        dims = sorted({d for t in entry.arch.tensors() if quantized_matrix(t) for d in t.shape[:2]})
        bad = [d for d in dims if d % fmt.group]
        if bad:
            raise EdgekitError(
                f"{fmt.id}: {entry.name} has a layer dimension of {bad[0]}, not a "
                f"multiple of the {fmt.group}x{fmt.group} block",
                "fp8:dynamic (one scale per channel) works",
            )

    def detect_config(self, q: dict[str, Any]) -> str | None:
        qm = str(q.get("quant_method", "")).lower()
        w = _ct_weights(q)
        if qm == "fp8" or (w.get("type") == "float" and w.get("num_bits") == 8):
            return "fp8:block128" if w.get("strategy") == "block" else "fp8:dynamic"
        return None
