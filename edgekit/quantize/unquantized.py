"""The model's unquantized GGUF, built once and cached: what quality measurement scores
against (edgekit.bench.reference) and what llama.cpp collects the importance matrix on.

It lives here, under quantize/, so that the GGUF build can reach it without importing bench/
(bench/ imports the formats, which import the GGUF build: a cycle)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit import atomic
from edgekit.artifact import safe_stem
from edgekit.paths import cache_dir

# references up to this size are run in F32 (exactly the checkpoint's values, F32 compute);
# larger ones as BF16 GGUF, which holds BF16 weights exactly but computes in lower precision
F32_REFERENCE_MAX_BYTES = 4 * 1024**3


def reference_gguf(checkpoint, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """An unquantized GGUF of the checkpoint, built once and cached."""
    from edgekit.quantize.gguf import Recipe, convert

    total, _ = checkpoint.entry.arch.param_counts()
    mix = "F32" if total * 4 <= F32_REFERENCE_MAX_BYTES else "BF16"
    path = cache_dir() / "reference" / f"{safe_stem(checkpoint.entry.name)}-{checkpoint.revision}-{mix}.gguf"
    # sealed cache entry, built by one process at a time: a damaged or unsealed one is rebuilt
    with atomic.locked(path):
        if not atomic.intact(path):
            convert(checkpoint, path, Recipe(mix=mix), progress)
            atomic.seal(path)
    return path


def buildable(entry) -> bool:
    """Whether edgekit converts this model to GGUF at all."""
    from edgekit.models.arch import arch_family

    return arch_family(entry.arch).supports("gguf")
