"""One entry point for building any format: a quantizer per format family.

A quantizer is a callable `(checkpoint, fmt, out_dir, calibration=None, progress=None,
**options) -> Artifact`; GGUF goes through the one-pass converter, GPTQ/AWQ/FP8 through
llm-compressor. Adding a family is one module plus one line here."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


def _gguf(checkpoint, fmt, out_dir: Path, calibration=None, progress=None, imatrix: str = "auto", **options):
    from edgekit.quantize.gguf_build import build_gguf

    return build_gguf(
        checkpoint,
        fmt.variant,
        out_dir,
        imatrix=imatrix,
        calibration=calibration,
        progress=progress,
        **options,
    )


def _compressed(
    checkpoint, fmt, out_dir: Path, calibration=None, progress=None, imatrix: str = "auto", **options
):
    from edgekit.quantize import compressed

    return compressed.build(checkpoint, fmt, out_dir, calibration=calibration, progress=progress, **options)


def _onnx(
    checkpoint, fmt, out_dir: Path, calibration=None, progress=None, imatrix: str = "auto", force=False, **_
):
    from edgekit.runtimes import onnx_export

    if calibration:
        raise EdgekitError(f"{fmt.id} is data-free: it takes no calibration text")
    say = progress.say if progress else None
    dest = out_dir / onnx_export.default_name(checkpoint.entry.name, fmt.variant)
    return onnx_export.export(checkpoint, dest, precision=fmt.variant, force=force, say=say)


QUANTIZERS = {"gguf": _gguf, "gptq": _compressed, "awq": _compressed, "fp8": _compressed, "onnx": _onnx}


def build(checkpoint, fmt, out_dir: Path, **options):
    """Build `fmt` (a Format) of an opened Checkpoint; returns the Artifact."""
    q = QUANTIZERS.get(fmt.family)
    if q is None:
        raise EdgekitError(f"{fmt.id} is a reference format, not something to quantize to")
    return q(checkpoint, fmt, Path(out_dir), **options)
