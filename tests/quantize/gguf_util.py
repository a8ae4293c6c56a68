"""Helpers shared by the GGUF tests."""

from pathlib import Path


def tensors_of(path: Path) -> dict[str, tuple[str, bytes]]:
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {t.name: (t.tensor_type.name, bytes(t.data.tobytes())) for t in r.tensors}


def log_softmax(x):
    import numpy as np

    m = x.max(-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(-1, keepdims=True))


def assert_same_as_llama_quantize(checkpoint, f32: Path, mix: str, imatrix, tmp: Path) -> dict:
    """edgekit's one-pass `mix` of `checkpoint` equals llama.cpp's `llama_model_quantize` of
    edgekit's F32 file `f32`, tensor for tensor: names, types and bytes. Returns the tensors."""
    from edgekit.quantize.gguf import Recipe, convert
    from edgekit.quantize.gguf_twostep import llama_quantize

    one, two = tmp / "one.gguf", tmp / "two.gguf"
    convert(checkpoint, one, Recipe(mix=mix, imatrix=imatrix))
    llama_quantize(f32, two, mix, imatrix=imatrix)
    a, b = tensors_of(one), tensors_of(two)
    assert set(a) == set(b)
    assert {n: a[n][0] for n in a} == {n: b[n][0] for n in b}
    assert [n for n in a if a[n][1] != b[n][1]] == []
    return a
