"""The importance matrix collected by llama.cpp itself, in-process (llama-cpp-python).

The unquantized GGUF is run over the calibration text as `llama-imatrix` runs it: the text
tokenized by the GGUF's vocabulary (its special tokens added, special-token text not parsed),
windows of `ctx` tokens, each window's first token BOS when the vocabulary adds one, every
position an output (so the last block computes every row). The scheduler's eval callback
(llama_context_params.cb_eval) sees every matrix multiplication with its weight (src[0]) and
its input activations (src[1]); what it keeps is what llama-imatrix keeps:

- GGML_OP_MUL_MAT on a `blk.*` weight with F32 inputs of at least 16 rows: the per-column sum
  of squares over all rows, counted once per row (per matrix when the weight is 3-D);
- GGML_OP_MUL_MAT_ID (experts): for each (token, slot) routed to expert e, the row's squares
  added to expert e's sums and 1 to its count; experts that saw no token keep count 0.

Squares and sums are float64 (llama-imatrix's are float32) and stored as float32
in edgekit's Imatrix, named by the GGUF tensor names, so the file is the same format.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.quantize.imatrix import Imatrix

if TYPE_CHECKING:
    import numpy as np

_MAX_DIMS, _MAX_SRC, _MAX_OP_PARAMS, _MAX_NAME = 4, 10, 64, 64  # ggml.h


class _Tensor(ctypes.Structure):
    """struct ggml_tensor as ggml.h (the one llama-cpp-python installs) lays it out; checked at
    the first callback against ggml_get_name / ggml_nrows."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * _MAX_DIMS),
        ("nb", ctypes.c_size_t * _MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * _MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * _MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def collector_name() -> str:
    """What the file's metadata records as the collector."""
    import llama_cpp

    return f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"


@functools.cache
def _ggml() -> ctypes.CDLL:
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency(
            "llama-cpp-python", "gguf", "needed to compute an importance matrix with llama.cpp"
        ) from None
    libdir = Path(llama_cpp.__file__).parent / "lib"
    for c in sorted(libdir.glob("libggml-base.*")) + sorted(libdir.glob("libggml.*")):
        try:
            lib = ctypes.CDLL(str(c))
            lib.ggml_op_name  # noqa: B018 - raises AttributeError when absent
            break
        except (OSError, AttributeError):
            continue
    else:
        raise MissingDependency("llama-cpp-python", "gguf", f"no ggml library in {libdir}")
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_get_name.restype = ctypes.c_void_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nrows.restype = ctypes.c_int64
    lib.ggml_nrows.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    return lib


def _weight_name(raw: bytes) -> str:
    """A weight's name without a backend's decorations (`CUDA0#blk.0.attn_k.weight#0`)."""
    name = raw.decode("utf-8", errors="replace")
    if "#" in name:
        name = name.split("#", 2)[1]
    return name


class _Collector:
    def __init__(self):
        self.lib = _ggml()
        self.sums: dict[str, np.ndarray] = {}  # float64 (nmat, ne0)
        self.counts: dict[str, np.ndarray] = {}  # int64 (nmat,)
        self.ops: dict[int, bytes] = {}
        self.error: BaseException | None = None
        self.checked = False

    def op(self, t: _Tensor) -> bytes:
        name = self.ops.get(t.op)
        if name is None:
            name = self.ops[t.op] = self.lib.ggml_op_name(t.op) or b""
        return name

    def _check_layout(self, addr: int, t: _Tensor) -> None:
        name_at = addr + _Tensor.name.offset
        if (
            self.lib.ggml_get_name(addr) != name_at
            or self.lib.ggml_nrows(addr) != t.ne[1] * t.ne[2] * t.ne[3]
        ):
            raise EdgekitError("llama-cpp-python's ggml_tensor layout is not the one edgekit reads")
        self.checked = True

    def __call__(self, addr: int, ask: bool, _user) -> bool:
        try:
            t = _Tensor.from_address(addr)
            if not self.checked:
                self._check_layout(addr, t)
            op = self.op(t)
            if op not in (b"MUL_MAT", b"MUL_MAT_ID"):
                return False if ask else True
            src0 = _Tensor.from_address(t.src[0])
            src1 = _Tensor.from_address(t.src[1])
            if ask:
                if op == b"MUL_MAT_ID":
                    return True
                name = _weight_name(src0.name)
                return src1.ne[1] >= 16 and src1.type == 0 and name.startswith("blk.")  # 0: F32
            if op == b"MUL_MAT_ID":
                self._experts(t, src0, src1)
            else:
                self._dense(src0, src1)
            return True
        except BaseException as e:  # raised after llama_decode returns; False aborts the graph
            self.error = self.error or e
            return False

    def _array(self, t: _Tensor, addr: int) -> np.ndarray:
        """The tensor's float32 values (ne3, ne2, ne1, ne0), copied off the device if needed."""
        import numpy as np

        if t.nb[0] != 4:
            raise EdgekitError(f"importance matrix: {op_input(t)} is not a float32 tensor")
        shape = tuple(int(t.ne[i]) for i in (3, 2, 1, 0))
        strides = tuple(int(t.nb[i]) for i in (3, 2, 1, 0))
        if t.buffer and self.lib.ggml_backend_buffer_is_host(t.buffer):
            span = sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 4
            buf = (ctypes.c_char * span).from_address(t.data)
            return np.ndarray(shape, np.float32, buffer=memoryview(buf), strides=strides)
        return self._copy(t, addr, np.float32, shape, strides)

    def _copy(self, t: _Tensor, addr: int, dtype, shape, strides) -> np.ndarray:
        import numpy as np

        nbytes = int(self.lib.ggml_nbytes(addr))
        raw = np.empty(nbytes, np.uint8)
        self.lib.ggml_backend_tensor_get(addr, raw.ctypes.data, 0, nbytes)
        return np.lib.stride_tricks.as_strided(raw.view(dtype), shape, strides)

    def _entry(self, name: str, nmat: int, ne0: int):
        import numpy as np

        if name not in self.sums:
            self.sums[name] = np.zeros((nmat, ne0), np.float64)
            self.counts[name] = np.zeros(nmat, np.int64)
        s, c = self.sums[name], self.counts[name]
        if s.shape != (nmat, ne0):
            raise EdgekitError(f"importance matrix: {name} seen with shapes {s.shape} and {(nmat, ne0)}")
        return s, c

    def _dense(self, src0: _Tensor, src1: _Tensor) -> None:
        import numpy as np

        name = _weight_name(src0.name)
        x = self._array(src1, ctypes.addressof(src1))
        n2, n3 = int(src0.ne[2]), int(src0.ne[3])
        nmat = n2 * n3
        s, c = self._entry(name, nmat, int(src1.ne[0]))
        for i3 in range(x.shape[0]):
            for i2 in range(x.shape[1]):
                rows = x[i3, i2].astype(np.float64)
                s[(i3 % n3) * n2 + (i2 % n2)] += np.einsum("ij,ij->j", rows, rows)
        c += (x.shape[0] * x.shape[1] * x.shape[2]) // nmat

    def _experts(self, t: _Tensor, src0: _Tensor, src1: _Tensor) -> None:
        import numpy as np

        name = _weight_name(src0.name)
        ids_addr = t.src[2]
        ids_t = _Tensor.from_address(ids_addr)
        n_as = int(src0.ne[2])
        x = self._array(src1, ctypes.addressof(src1))  # (1, tokens, ne1, cols)
        if x.shape[0] != 1:
            raise EdgekitError(f"importance matrix: {name}'s expert inputs have more than 3 dimensions")
        x = x[0]
        n_ids, n_tok = int(ids_t.ne[0]), int(ids_t.ne[1])
        ids = self._copy(ids_t, ids_addr, np.int32, (n_tok, n_ids), (int(ids_t.nb[1]), int(ids_t.nb[0])))
        if n_tok != x.shape[0] or ids.min(initial=0) < 0 or ids.max(initial=0) >= n_as:
            raise EdgekitError(f"importance matrix: {name}'s expert ids do not match its inputs")
        s, c = self._entry(name, n_as, x.shape[2])
        experts = np.arange(n_as)
        for slot in range(n_ids):
            squares = np.square(x[:, slot % x.shape[1], :].astype(np.float64))
            onehot = (ids[:, slot, None] == experts).astype(np.float64)  # (tokens, n_as)
            s += onehot.T @ squares
            c += np.bincount(ids[:, slot], minlength=n_as)

    def result(self, datasets: list[str], chunks: int, ctx: int) -> Imatrix:
        import numpy as np

        sums = {k: v.astype(np.float32) for k, v in self.sums.items()}
        counts = {k: v.astype(np.float32) for k, v in self.counts.items()}
        return Imatrix(sums, counts, datasets, chunks, ctx, collector=collector_name())


def op_input(t: _Tensor) -> str:
    return _weight_name(t.name) or "an input"


def tokenize(vocab, text: str) -> list[int]:
    """llama.cpp's tokens for `text` as llama-imatrix takes them (special tokens added)."""
    import llama_cpp

    raw = text.encode("utf-8")
    n_max = len(raw) + 16
    buf = (llama_cpp.llama_token * n_max)()
    n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, n_max, True, False)
    if n < 0:
        buf = (llama_cpp.llama_token * -n)()
        n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, -n, True, False)
    return list(buf[:n])


def collect(
    gguf_path: Path,
    text: str,
    ctx: int = 512,
    max_chunks: int | None = None,
    dataset: str = "calibration",
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Imatrix:
    """The importance matrix of the unquantized GGUF `gguf_path` over `text` (see the module)."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency(
            "llama-cpp-python", "gguf", "needed to compute an importance matrix with llama.cpp"
        ) from None
    with _quiet_log(llama_cpp):
        return _collect(llama_cpp, gguf_path, text, ctx, max_chunks, dataset, threads, progress)


class _quiet_log:
    """llama.cpp's log off while it loads and runs the model (its debug lines are not ours to
    print); the callback that was installed comes back afterwards."""

    def __init__(self, llama_cpp):
        self.lc = llama_cpp

    def __enter__(self) -> None:
        lc = self.lc
        self.prev = lc.llama_log_callback()
        self.prev_data = ctypes.c_void_p()
        lc.llama_log_get(ctypes.byref(self.prev), ctypes.byref(self.prev_data))
        self.callback = lc.llama_log_callback(lambda level, text, data: None)  # kept alive while set
        lc.llama_log_set(self.callback, None)

    def __exit__(self, *exc: object) -> None:
        self.lc.llama_log_set(self.prev, self.prev_data)


def _collect(llama_cpp, gguf_path, text, ctx, max_chunks, dataset, threads, progress) -> Imatrix:
    import numpy as np

    collector = _Collector()
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)  # alive until the context is freed
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), mparams)
    if not model:
        raise EdgekitError(f"{gguf_path}: llama.cpp cannot load it")
    lctx = None
    batch = None
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        ids = tokenize(vocab, text)
        n_chunks = len(ids) // ctx
        if max_chunks:
            n_chunks = min(n_chunks, max_chunks)
        if n_chunks < 1:
            raise EdgekitError(f"calibration text has {len(ids)} tokens, fewer than one window of {ctx}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = ctx
        cparams.n_batch = ctx
        cparams.n_ubatch = min(ctx, 512)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads or os.cpu_count() or 1
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        cparams.cb_eval = callback
        cparams.cb_eval_user_data = None
        lctx = llama_cpp.llama_init_from_model(model, cparams)
        if not lctx:
            raise EdgekitError(f"{gguf_path}: llama.cpp could not make a context of {ctx} tokens")
        bos = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
        batch = llama_cpp.llama_batch_init(ctx, 0, 1)
        np.ctypeslib.as_array(batch.n_seq_id, (ctx,))[:] = 1
        for i in range(ctx):
            batch.seq_id[i][0] = 0
        np.ctypeslib.as_array(batch.pos, (ctx,))[:] = np.arange(ctx, dtype=np.int32)
        np.ctypeslib.as_array(batch.logits, (ctx,))[:] = 1  # every row an output, as llama-imatrix
        batch.n_tokens = ctx
        for i in range(n_chunks):
            window = np.asarray(ids[i * ctx : (i + 1) * ctx], dtype=np.int32)
            if bos is not None:
                window[0] = bos
            np.ctypeslib.as_array(batch.token, (ctx,))[:] = window
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lctx), True)
            rc = llama_cpp.llama_decode(lctx, batch)
            if collector.error is not None:
                raise collector.error
            if rc != 0:
                raise EdgekitError(f"llama.cpp could not evaluate the calibration text (llama_decode {rc})")
            if progress:
                progress(i + 1, n_chunks)
    finally:
        if batch is not None:
            llama_cpp.llama_batch_free(batch)
        if lctx:
            llama_cpp.llama_free(lctx)
        llama_cpp.llama_model_free(model)
    if not collector.sums:
        raise EdgekitError(f"{gguf_path}: llama.cpp ran no matrix multiplication edgekit could collect")
    return collector.result([dataset], n_chunks, ctx)
