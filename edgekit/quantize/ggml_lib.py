"""llama.cpp's own quantization kernels, called through ctypes.

The shared library that llama-cpp-python installs exports ggml's
`ggml_quantize_chunk(type, src, dst, start, nrows, n_per_row, imatrix)`; calling it on the
F32 values of a tensor yields exactly the bytes `llama-quantize` writes. Rows are split
across threads: ctypes releases the GIL for the duration of each call.
"""

from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgekit.errors import MissingDependency
from edgekit.gguf_io import ggml_types


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        import llama_cpp  # loads libllama and the ggml libraries it depends on
    except ImportError:
        raise MissingDependency("llama-cpp-python", "gguf", "needed for GGUF quantization") from None
    libdir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(libdir.glob("libggml-base.*")) + sorted(libdir.glob("libggml.*"))
    for c in candidates:
        try:
            lib = ctypes.CDLL(str(c))
            lib.ggml_quantize_chunk  # noqa: B018 - raises AttributeError when absent
            break
        except (OSError, AttributeError):
            continue
    else:
        raise MissingDependency(
            "llama-cpp-python", "gguf", f"no ggml library exporting ggml_quantize_chunk in {libdir}"
        )
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def requires_imatrix(type_name: str) -> bool:
    return bool(_lib().ggml_quantize_requires_imatrix(ggml_types.get(type_name).id))


def row_bytes(type_name: str, n_per_row: int) -> int:
    return int(_lib().ggml_row_size(ggml_types.get(type_name).id, n_per_row))


def quantize_rows(values, type_name: str, imatrix=None, threads: int | None = None):
    """Quantize a C-contiguous float32 matrix (rows x n_per_row) to `type_name`.

    imatrix: per-column importance (n_per_row float32) or None. Returns uint8 (rows x bytes).
    """
    import numpy as np

    lib = _lib()
    gt = ggml_types.get(type_name)
    src = np.ascontiguousarray(values, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError("quantize_rows expects a 2-D array")
    nrows, n_per_row = src.shape
    if n_per_row % gt.block:
        raise ValueError(f"row length {n_per_row} is not a multiple of {type_name}'s block ({gt.block})")
    rb = row_bytes(type_name, n_per_row)
    dst = np.empty((nrows, rb), dtype=np.uint8)
    imat = None
    if imatrix is not None:
        imat = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imat.shape != (n_per_row,):
            raise ValueError(f"importance matrix has shape {imat.shape}, expected ({n_per_row},)")
    elif requires_imatrix(type_name):
        raise ValueError(f"{type_name} requires an importance matrix")
    imat_ptr = imat.ctypes.data if imat is not None else None
    threads = max(1, min(threads or os.cpu_count() or 1, nrows))
    # ggml's k-quants work on whole rows; chunks are row ranges
    bounds = [nrows * i // threads for i in range(threads + 1)]

    def work(i: int) -> int:
        r0, r1 = bounds[i], bounds[i + 1]
        if r1 <= r0:
            return 0
        return lib.ggml_quantize_chunk(
            gt.id, src.ctypes.data, dst.ctypes.data, r0 * n_per_row, r1 - r0, n_per_row, imat_ptr
        )

    if threads == 1:
        written = work(0)
    else:
        with ThreadPoolExecutor(threads) as ex:
            written = sum(ex.map(work, range(threads)))
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {dst.nbytes}")
    return dst
