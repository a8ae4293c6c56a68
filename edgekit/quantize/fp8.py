"""FP8 E4M3 checkpoints through llm-compressor; data-free (weights only need their own
ranges, activations are quantized dynamically at run time).

- fp8:dynamic — one scale per output channel, activations per token at run time (W8A8 on
  compute capability >= 8.9; weight-only FP8 through Marlin below that).
- fp8:block128 — one scale per 128x128 weight block, activations per group of 128 (the
  layout of the official Qwen3/DeepSeek FP8 releases)."""

from __future__ import annotations

METHOD = "fp8"  # what an architecture family may refuse (ArchFamily.llm_compressor_refusal)
NEEDS_CALIBRATION = False

_SCHEMES = {"dynamic": "FP8_DYNAMIC", "block128": "FP8_BLOCK"}


def scheme(fmt) -> dict:
    from compressed_tensors.quantization import preset_name_to_scheme

    s = preset_name_to_scheme(_SCHEMES[fmt.variant], ["Linear"])
    return {"preset": _SCHEMES[fmt.variant], **s.model_dump(exclude={"targets"}, exclude_none=True)}


def modifier(fmt, ignore: list[str]):
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return QuantizationModifier(targets=["Linear"], ignore=ignore, scheme=_SCHEMES[fmt.variant])
