"""Quantization formats, one family per module: what each stores per tensor, its size, which
runtime serves it, how well each device runs it, and how it is built.

    gguf.py        gguf:*   llama.cpp mixes (one-pass converter, importance matrix)
    compressed.py  gptq:* awq:* fp8:*   compressed-tensors through llm-compressor
    bf16.py        bf16     the unquantized checkpoint (the reference)
    onnx.py        onnx:*   torch.onnx export for onnxruntime

The protocol and the registry are in base.py; a family registers itself with its class
argument (`class X(FormatFamily, family="x")`) or, from another package, through the
`edgekit.formats` entry-point group. Pure Python: nothing heavy is imported here.
"""

from edgekit.formats import builtins as _builtins  # noqa: F401  (registers the built-in families)
from edgekit.formats.base import (
    QUANTIZED_ROLES,
    ArtifactLines,
    BuildOptions,
    Format,
    FormatFamily,
    Support,
    TensorPlan,
    build,
    default_formats,
    default_ladder,
    detect_format,
    families,
    family,
    format_dict,
    get_format,
    register,
    registry,
    support,
    unregister,
)

__all__ = [
    "QUANTIZED_ROLES",
    "ArtifactLines",
    "BuildOptions",
    "Format",
    "FormatFamily",
    "Support",
    "TensorPlan",
    "build",
    "default_formats",
    "default_ladder",
    "detect_format",
    "families",
    "family",
    "format_dict",
    "get_format",
    "register",
    "registry",
    "support",
    "unregister",
]
