"""Quantization formats: what each one stores per tensor, its size, who serves it, and
which devices run it natively.

The size model is per tensor, not per model: GGUF mixes keep some tensors wider (Q6_K
output, Q6_K halves of attn_v/ffn_down in Q4_K_M), GPTQ/AWQ/FP8 checkpoints keep the
embeddings, lm_head, norms and MoE routers in BF16. Pure Python: no heavy imports.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from edgekit.errors import EdgekitError, UnknownName
from edgekit.gguf_io import ggml_types
from edgekit.models.arch import Arch, Tensor

GGUF_MIXES = (
    "F16",
    "BF16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q4_K_M",
    "Q4_K_S",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q2_K",
)

# roles whose weights the GPTQ/AWQ/FP8 producers quantize; everything else stays BF16
_QUANTIZED_ROLES = {"attn", "ffn", "expert", "shared_expert"}


@dataclass(frozen=True)
class TensorPlan:
    name: str
    role: str
    shape: tuple[int, ...]
    type: str  # ggml type name for GGUF, a storage label otherwise ("int4-g128", "fp8", "bf16")
    nbytes: int


@dataclass(frozen=True)
class Support:
    level: str  # native | slow | no
    reason: str


@dataclass(frozen=True)
class Format:
    id: str
    family: str  # gguf | gptq | awq | fp8 | bf16
    variant: str
    description: str
    runtimes: tuple[str, ...]
    compute: str  # matmul dtype on a GPU: fp16 | fp8 | int8
    bits: int = 16
    group: int = 0
    symmetric: bool = True

    def tensor_plan(self, arch: Arch) -> list[TensorPlan]:
        return _tensor_plan(self, arch)

    def weight_bytes(self, arch: Arch) -> int:
        return sum(t.nbytes for t in self.tensor_plan(arch))

    def bits_per_weight(self, arch: Arch) -> float:
        plan = self.tensor_plan(arch)
        n = sum(math.prod(t.shape) for t in plan)
        return 8.0 * sum(t.nbytes for t in plan) / n

    def runtime_for(self, device_kind: str) -> str:
        if self.family == "gguf":
            return "llama.cpp"
        if self.family == "onnx":
            return "onnxruntime"
        return "vllm" if device_kind == "gpu" else "transformers"


# ---- registry ------------------------------------------------------------------------


@functools.cache
def registry() -> dict[str, Format]:
    out: dict[str, Format] = {}
    for mix in GGUF_MIXES:
        out[f"gguf:{mix}"] = Format(
            f"gguf:{mix}",
            "gguf",
            mix,
            f"llama.cpp {mix} mix",
            ("llama.cpp",),
            "int8" if "_" in mix else "fp16",
        )
    for fmt in (_gptq(4, 128, "gptq"), _gptq(8, 128, "gptq"), _gptq(4, 128, "awq")):
        out[fmt.id] = fmt
    out["fp8:dynamic"] = Format(
        "fp8:dynamic",
        "fp8",
        "dynamic",
        "FP8 E4M3 weights with per-channel scales, dynamic per-token FP8 activations (W8A8)",
        ("vllm", "transformers"),
        "fp8",
        bits=8,
    )
    out["fp8:block128"] = Format(
        "fp8:block128",
        "fp8",
        "block128",
        "FP8 E4M3 weights with one scale per 128x128 block (DeepSeek/Qwen FP8 releases)",
        ("vllm", "transformers"),
        "fp8",
        bits=8,
        group=128,
    )
    out["bf16"] = Format(
        "bf16", "bf16", "bf16", "unquantized BF16 safetensors", ("transformers", "vllm"), "fp16"
    )
    for variant, bits, what in (
        ("fp32", 32, "FP32 ONNX graph with KV cache (torch.onnx export)"),
        ("int8", 8, "ONNX, MatMulNBits int8 weights, blocks of 32, symmetric"),
        ("int4", 4, "ONNX, MatMulNBits int4 weights, blocks of 32, with zero points"),
    ):
        out[f"onnx:{variant}"] = Format(
            f"onnx:{variant}",
            "onnx",
            variant,
            what,
            ("onnxruntime",),
            "fp16",
            bits=bits,
            group=32 if bits < 32 else 0,
            symmetric=bits != 4,
        )
    return out


def _gptq(bits: int, group: int, family: str) -> Format:
    sym = family == "gptq"
    what = "GPTQ (error-compensating rounding)" if family == "gptq" else "AWQ (activation-aware scales)"
    return Format(
        f"{family}:w{bits}g{group}",
        family,
        f"w{bits}g{group}",
        f"{what}: int{bits} weights, one FP16 scale{'' if sym else ' and zero point'} per {group} inputs, "
        "BF16 activations (W{bits}A16)".replace("{bits}", str(bits)),
        ("vllm", "transformers"),
        "fp16",
        bits=bits,
        group=group,
        symmetric=sym,
    )


_GPTQ_RE = re.compile(r"^(gptq|awq):w(\d+)g(\d+)$")


def get_format(spec: str) -> Format:
    s = spec.strip()
    low = s.lower()
    if low.startswith("gguf:"):
        key = "gguf:" + s[5:].upper()
    else:
        key = low
    reg = registry()
    if key in reg:
        return reg[key]
    if key.startswith("gguf:"):
        from edgekit.quantize.gguf_mix import MIX_DEFAULT

        if key[5:] in MIX_DEFAULT:  # buildable, though not on the default planning ladder
            mix = key[5:]
            return Format(
                key, "gguf", mix, f"llama.cpp {mix} mix", ("llama.cpp",), "int8" if "_" in mix else "fp16"
            )
    if m := _GPTQ_RE.match(key):
        bits, group = int(m.group(2)), int(m.group(3))
        if bits not in (2, 3, 4, 8) or group not in (32, 64, 128, 256):
            raise EdgekitError(f"format '{spec}': bits must be 2, 3, 4 or 8 and group 32, 64, 128 or 256")
        return _gptq(bits, group, m.group(1))
    raise UnknownName("format", spec, list(reg))


def default_formats() -> list[Format]:
    """The ladder edgekit plans and searches: every registered format."""
    return list(registry().values())


# ---- support per device ---------------------------------------------------------------


def support(fmt: Format, device) -> Support:
    """How a device runs a format, from its compute capability or CPU features."""
    if fmt.id in device.formats_unsupported or fmt.family in device.formats_unsupported:
        return Support("no", f"{device.name} lists {fmt.id} as unsupported")
    if fmt.family == "onnx":
        if device.kind == "cpu":
            return Support("native", "onnxruntime CPU kernels (MatMulNBits for int8/int4)")
        return Support("slow", "onnxruntime CUDA runs the fp32 graph: no fp16 export yet")
    if device.kind == "cpu":
        if fmt.family == "gguf":
            return Support("native", "llama.cpp CPU kernels")
        if fmt.family == "bf16":
            return Support("native", "transformers on CPU")
        return Support("slow", "transformers on CPU dequantizes the weights: no int4/FP8 CPU kernels")
    cc = device.compute_capability or (0, 0)
    if fmt.family == "gguf":
        return (
            Support("native", "llama.cpp CUDA kernels") if cc >= (5, 0) else Support("no", "needs CC >= 5.0")
        )
    if fmt.family == "bf16":
        return (
            Support("native", "BF16 tensor cores")
            if cc >= (8, 0)
            else Support("slow", "no BF16 below CC 8.0")
        )
    if fmt.family in ("gptq", "awq"):
        if cc >= (8, 0):
            return Support("native", "Marlin int4/int8 kernels (vLLM)")
        return Support("slow", "no Marlin below CC 8.0: ExLlama/Triton fallback")
    if fmt.family == "fp8":
        if fmt.variant == "block128":
            if cc >= (9, 0):
                return Support("native", "block-scaled FP8 GEMM (CUTLASS/DeepGEMM)")
            if cc >= (8, 9):
                return Support("slow", "block-FP8 falls back to a slower kernel on CC 8.9 (vLLM #48035)")
            return Support("slow", "weight-only FP8 through Marlin: no FP8 tensor cores below CC 8.9")
        if cc >= (8, 9):
            return Support("native", "FP8 W8A8 on FP8 tensor cores (needs CC >= 8.9)")
        return Support("slow", "weight-only FP8 through Marlin: FP8 W8A8 needs CC >= 8.9")
    return Support("no", "unknown format family")


# ---- size model ------------------------------------------------------------------------


def _tensor_plan(fmt: Format, arch: Arch) -> list[TensorPlan]:
    tensors = arch.tensors()
    if fmt.family == "gguf":
        from edgekit.quantize.gguf_mix import assign_types

        types = assign_types(tensors, fmt.variant, arch)
        return [
            TensorPlan(t.name, t.role, t.shape, ty := types[t.name], ggml_types.tensor_nbytes(t.shape, ty))
            for t in tensors
        ]
    return [_safetensors_plan(fmt, t) for t in tensors]


def _safetensors_plan(fmt: Format, t: Tensor) -> TensorPlan:
    n = t.n_elements
    if fmt.family == "onnx":
        # onnxruntime holds the graph in fp32; MatMulNBits quantizes the linear layers only
        if fmt.bits == 32 or t.role not in _QUANTIZED_ROLES or not t.is_matrix:
            return TensorPlan(t.name, t.role, t.shape, "fp32", 4 * n)
        blocks = n // 32 + (1 if n % 32 else 0)
        nbytes = n * fmt.bits // 8 + 4 * blocks + (blocks // 2 if not fmt.symmetric else 0)
        return TensorPlan(t.name, t.role, t.shape, f"int{fmt.bits}-b32", nbytes)
    if fmt.family == "bf16" or t.role not in _QUANTIZED_ROLES or not t.is_matrix:
        return TensorPlan(t.name, t.role, t.shape, "bf16", 2 * n)
    cols = t.shape[0]
    rows = n // cols
    if fmt.family == "fp8":
        if fmt.variant == "block128":
            blocks = -(-cols // 128) * -(-rows // 128)
            return TensorPlan(t.name, t.role, t.shape, "fp8-b128", n + 4 * blocks)  # fp32 block scales
        return TensorPlan(t.name, t.role, t.shape, "fp8", n + 2 * rows)  # one bf16 scale per output channel
    # GPTQ / AWQ: packed int weights, one fp16 scale (and packed zero point) per group per row
    groups = rows * -(-cols // fmt.group)
    nbytes = n * fmt.bits // 8 + 2 * groups
    if not fmt.symmetric:
        nbytes += groups * fmt.bits // 8
    return TensorPlan(t.name, t.role, t.shape, f"int{fmt.bits}-g{fmt.group}", nbytes)
