"""GPTQ (error-compensating rounding, Frantar et al. 2022) through llm-compressor:
int4/int8 weights with one scale per group of inputs, symmetric, activations in 16 bit."""

from __future__ import annotations

METHOD = "gptq"  # what an architecture family may refuse (ArchFamily.llm_compressor_refusal)
NEEDS_CALIBRATION = True


def scheme(fmt) -> dict:
    return {
        "weights": {
            "num_bits": fmt.bits,
            "type": "int",
            "symmetric": True,
            "strategy": "group",
            "group_size": fmt.group,
            "actorder": "static",
        },
        "input_activations": None,
    }


def modifier(fmt, ignore: list[str]):
    from llmcompressor.modifiers.quantization import GPTQModifier

    return GPTQModifier(targets=["Linear"], ignore=ignore, config_groups={"group_0": _group(fmt)})


def _group(fmt) -> dict:
    return {"targets": ["Linear"], **scheme(fmt)}
