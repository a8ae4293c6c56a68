"""AWQ (activation-aware weight scaling, Lin et al. 2023) through llm-compressor, the
maintained home of AutoAWQ's algorithm: per-channel scales searched on calibration
activations are folded into the preceding layer, then int4 group-wise rounding.

Symmetric (no zero point): asymmetric int4 checkpoints failed to load in transformers on
these machines (MoE always), while symmetric ones load everywhere (docs/dependencies.md)."""

from __future__ import annotations

METHOD = "awq"  # what an architecture family may refuse (ArchFamily.llm_compressor_refusal)
NEEDS_CALIBRATION = True
# llm-compressor's AWQ pins cached activations for an accelerator (compressed.cpu_only_fixes)
PINS_MEMORY = True


def scheme(fmt) -> dict:
    return {
        "weights": {
            "num_bits": fmt.bits,
            "type": "int",
            "symmetric": True,
            "strategy": "group",
            "group_size": fmt.group,
        },
        "input_activations": None,
    }


def modifier(fmt, ignore: list[str], mappings: list | None = None):
    """`mappings`: the smoothing pairs (llm-compressor AWQMapping list) the architecture
    family names; None lets llm-compressor pick them by the model's class."""
    from llmcompressor.modifiers.awq import AWQModifier

    return AWQModifier(
        targets=["Linear"],
        ignore=ignore,
        mappings=mappings,
        config_groups={"group_0": {"targets": ["Linear"], **scheme(fmt)}},
    )
