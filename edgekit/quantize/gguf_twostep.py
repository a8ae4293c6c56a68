"""The two-step path llama.cpp users run today: a finished F16/F32 GGUF, then
`llama_model_quantize` (the library behind llama-quantize). edgekit's one-pass converter
is measured against it and must produce the same tensors."""

from __future__ import annotations

import ctypes
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency


def llama_quantize(
    src: Path,
    dst: Path,
    mix: str,
    imatrix: dict | None = None,
    overrides: list[tuple[str, str]] | None = None,
    threads: int = 0,
) -> None:
    """Quantize GGUF `src` to `dst` with llama.cpp itself. imatrix: name -> normalised importances."""
    try:
        import llama_cpp.llama_cpp as L
        import numpy as np
    except ImportError:
        raise MissingDependency("llama-cpp-python", "gguf") from None
    from edgekit.gguf_io import ggml_types
    from edgekit.quantize.gguf import FILE_TYPE

    params = L.llama_model_quantize_default_params()
    params.ftype = FILE_TYPE[mix.upper()]
    params.nthread = threads
    keep: list[object] = []  # buffers llama.cpp reads through raw pointers: kept alive until it returns
    if imatrix:
        arr = (L.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            v = np.ascontiguousarray(values, dtype=np.float32).ravel()
            keep.append(v)
            arr[i].name = name.encode()
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(L.llama_model_imatrix_data))
    if overrides:
        tt = (L.llama_model_tensor_override * (len(overrides) + 1))()
        for i, (pattern, ty) in enumerate(overrides):
            tt[i].pattern = pattern.encode()
            tt[i].type = ggml_types.get(ty).id
        tt[len(overrides)].pattern = None
        tt[len(overrides)].type = 43  # GGML_TYPE_COUNT ends the list
        keep.append(tt)
        params.tt_overrides = ctypes.cast(tt, ctypes.POINTER(L.llama_model_tensor_override))
    rc = L.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise EdgekitError(f"llama_model_quantize failed on {src} (code {rc})")
