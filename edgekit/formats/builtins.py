"""The format families edgekit ships; importing this module registers them, in this order
(the order `edgekit plan` and `edgekit formats` list them in)."""

from edgekit.formats import bf16, compressed, gguf, onnx

FAMILIES = (gguf.GGUF, compressed.GPTQ, compressed.AWQ, compressed.FP8, bf16.BF16, onnx.ONNX)
