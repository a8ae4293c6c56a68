"""How much KL divergence each tensor group costs at a type, measured; every tensor's
importance-weighted quantization error at every type of its ladder.

Two parts, one pass over the weights, independent of the budget (one measurement serves every
`gguf:auto@BUDGET` of a model, importance matrix and calibration text; edgekit.quantize.gguf_auto
caches it):

1. Weighted errors: each tensor quantized at each type of its ladder (ggml's own quantizer with
   the importance matrix, the converter's bytes), decoded with ggml's own dequantizer, and its
   error weighted as the model sees it: the sum over columns of importance x squared error (the
   importance matrix holds each input column's mean squared activation, so this is the expected
   squared error a token's matmul output picks up; without an importance matrix every column
   weighs 1). The probe types (part 2) are quantized whole, through the tensor cache (a
   previous build's bytes are used, and the build that follows copies what it shares with
   them); the other types on every ERROR_ROW_STEP-th row only (ggml quantizes row by row, so
   those rows' bytes are the whole tensor's), their error scaled to the whole.
2. Group moves (fake quantization in llama.cpp itself): the model's unquantized GGUF (edgekit's
   F32 reference; BF16 for large models) is loaded once by llama.cpp with its weights in host
   memory (not memory-mapped), and the scheduler's eval callback tells us where each weight
   tensor lives. On a short calibration slice (windows of the calibration text, disjoint from
   the evaluation text, evaluated together in one batch; rows `SKIP..window-2` of each window
   scored against the reference's full-vocabulary distribution computed first) we measure, for
   each group of tensors (a role over a range of layers, or the token embedding, or the
   output) and each of its probe types, the KLD with only that group's weights overwritten
   with the values their quantized version decodes to, then put the reference values back.
   The group's KLD per unit of its weighted error is what the allocator prices every type of
   its tensors by (a tensor's own error carries its own weight; the group's scale carries how
   much the model amplifies an error at that depth and role).

Groups rather than single tensors: a move of one tensor of a 30-layer model is lost in the
slice's noise (and costs one forward pass each), a role over a quarter of the layers is not.
Experts stay groups too: each layer's stacked expert tensor (all experts of a layer share one
type in a GGUF tensor) is a tensor of its role's group. Activations stay float32 (a real
quantized model also rounds activations to 8 bits in its dot products), so the figures rank
tensors; the built file is verified on the evaluation store like any candidate.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types

if TYPE_CHECKING:
    import numpy as np

SKIP = 32  # the first rows of a window are not scored: too little context
# the weighted errors of the types a group is not measured at are taken on every ERROR_ROW_STEP-th
# row of each matrix (at least ERROR_MIN_ROWS rows; ggml quantizes row by row, so these rows'
# bytes are the whole tensor's), scaled to the whole: the types' errors stay on the same rows
ERROR_ROW_STEP = 8
ERROR_MIN_ROWS = 64


@dataclass
class GroupMove:
    group: str
    types: dict[str, str]  # tensor -> the type it was moved to (every other tensor as in the reference)
    dkld: float  # KLD(reference with the group at `types`) on the calibration slice


@dataclass
class Sensitivity:
    errors: dict[str, dict[str, float]]  # tensor -> type -> weighted quantization error
    groups: dict[str, list[str]]  # group -> its tensors
    moves: list[GroupMove] = field(default_factory=list)
    positions: int = 0
    evaluations: int = 0  # forward passes over the slice (the reference's included)
    seconds: float = 0.0  # the whole pass
    errors_seconds: float = 0.0  # of which quantizing and weighing every type
    forward_seconds: float = 0.0  # of which llama.cpp's forward passes and their KLD
    tensor_cache: dict[str, Any] | None = None  # the tensor cache's hits/misses during the pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "groups": self.groups,
            "moves": [vars(m) for m in self.moves],
            "positions": self.positions,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "errors_seconds": self.errors_seconds,
            "forward_seconds": self.forward_seconds,
            "tensor_cache": self.tensor_cache,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        return cls(
            {k: {t: float(e) for t, e in v.items()} for k, v in d["errors"].items()},
            {k: list(v) for k, v in d["groups"].items()},
            [GroupMove(m["group"], dict(m["types"]), float(m["dkld"])) for m in d["moves"]],
            int(d["positions"]),
            int(d["evaluations"]),
            float(d["seconds"]),
            float(d["errors_seconds"]),
            float(d["forward_seconds"]),
            d.get("tensor_cache"),
        )

    def scales(self) -> dict[str, float]:
        """Each group's KLD per unit of weighted error: least squares through the origin (the
        reference) over its measured moves, never below zero."""
        out = {}
        for g, names in self.groups.items():
            num = den = 0.0
            for m in self.moves:
                if m.group == g:
                    e = sum(self.errors[n][m.types[n]] for n in names)
                    num, den = num + m.dkld * e, den + e * e
            out[g] = max(num / den, 0.0) if den > 0 else 0.0
        return out


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def dequantize(data: np.ndarray, ty: str, n: int) -> np.ndarray:
    """ggml's own decoding of `n` values of type `ty` (float32)."""
    import numpy as np

    from edgekit.quantize.imatrix_llamacpp import _ggml

    lib = _ggml()
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    traits = lib.ggml_get_type_traits(ggml_types.get(ty).id).contents
    src = np.ascontiguousarray(data)
    out = np.empty(n, np.float32)
    if ty == "F32":
        out[:] = src.view(np.float32)[:n]
    elif ty == "F16":
        out[:] = src.view(np.float16)[:n]
    else:
        _TO_FLOAT(traits.to_float)(src.ctypes.data, out.ctypes.data, n)
    return out


def f32_rows(t: Any) -> np.ndarray:
    """A GGUF reader tensor's values as float32 (matrices, rows, columns): one matrix per
    expert of a stacked expert tensor, else one."""
    import numpy as np

    shape = [int(d) for d in t.shape]  # ne order
    cols = shape[0]
    mats = math.prod(shape[2:]) if len(shape) > 2 else 1
    raw = np.asarray(t.data)
    if t.tensor_type.name == "F32":
        x = raw.astype(np.float32, copy=False)
    else:
        x = dequantize(raw.view(np.uint8), t.tensor_type.name, math.prod(shape))
    return x.reshape(mats, -1, cols)


def quantize_tensor(values: np.ndarray, ty: str, imatrix: np.ndarray | None, threads: int | None) -> Any:
    """Bytes of a (experts, rows, cols) float32 tensor as the converter writes them (each
    expert with its own importance)."""
    import numpy as np

    from edgekit.quantize.ggml_lib import quantize_rows

    if ty == "F32":
        return np.ascontiguousarray(values, np.float32).view(np.uint8).ravel()
    if ty == "F16":
        return np.ascontiguousarray(values, np.float16).view(np.uint8).ravel()
    parts = []
    cols = values.shape[-1]
    for e in range(values.shape[0]):
        imp = None
        if imatrix is not None:
            imp = imatrix.reshape(-1, cols)[e] if imatrix.size > cols else imatrix
        parts.append(quantize_rows(values[e], ty, imp, threads).ravel())
    return np.concatenate(parts)


def cached_quantize(
    cache: Any, values: np.ndarray, ty: str, imatrix: np.ndarray | None, threads: int | None
) -> Any:
    """quantize_tensor through the tensor cache (edgekit.quantize.tensor_cache): the rows are
    keyed as the converter feeds them (one chunk per expert matrix), so a build of the same
    tensor at the same type copies these bytes, and these are a previous build's when it made
    them."""
    import numpy as np

    from edgekit.quantize.tensor_cache import UNCACHED

    if cache is None or ty in UNCACHED:
        return quantize_tensor(values, ty, imatrix, threads)

    def chunks():
        return ((e, values[e]) for e in range(values.shape[0]))

    key, _ = cache.key(ty, imatrix, chunks(), chunks)
    cols = values.shape[-1]
    from edgekit.quantize.ggml_lib import row_bytes

    nbytes = values.shape[0] * values.shape[1] * row_bytes(ty, cols)
    buf = io.BytesIO()
    if cache.copy_to(key, nbytes, buf):
        return np.frombuffer(buf.getbuffer(), np.uint8)
    data = quantize_tensor(values, ty, imatrix, threads)
    with cache.store(key) as sink:
        sink(data)
    return data


def row_step(rows: int) -> int:
    """The stride of the rows a tensor's weighted errors are taken on."""
    return max(1, min(ERROR_ROW_STEP, rows // ERROR_MIN_ROWS))


def weighted_error(values: np.ndarray, decoded: np.ndarray, imatrix: np.ndarray | None) -> float:
    """Sum over columns of importance x squared error (see the module), float64; `values`
    and `decoded` are (matrices, rows, columns)."""
    import numpy as np

    d = (decoded - values).astype(np.float32, copy=False)
    col = np.einsum("mrc,mrc->mc", d, d, dtype=np.float64)  # per matrix and column
    if imatrix is None:
        return float(col.sum())
    w = np.asarray(imatrix, np.float64).reshape(-1, values.shape[-1])
    return float((np.broadcast_to(w, col.shape) * col).sum())


class FakeQuantModel:
    """The unquantized GGUF in llama.cpp, its weights writable in place; `n_windows` windows
    of `window` tokens evaluated in one batch (one sequence each)."""

    def __init__(self, path: Path, window: int, threads: int | None = None, n_windows: int = 1):
        import llama_cpp as L
        import numpy as np

        from edgekit.quantize.imatrix_llamacpp import _ggml, _Tensor, _weight_name

        self.L, self.window, self.n_windows = L, window, n_windows
        lib = self.lib = _ggml()
        self.weights: dict[str, tuple[int, int, int]] = {}  # name -> (tensor address, ggml type id, nbytes)
        self.error: BaseException | None = None

        def seen(addr: int, ask: bool, _ud) -> bool:
            try:
                if ask:
                    t = _Tensor.from_address(addr)
                    if lib.ggml_op_name(t.op) in (b"MUL_MAT", b"MUL_MAT_ID", b"GET_ROWS"):
                        a = t.src[0]
                        s = _Tensor.from_address(a)
                        while s.view_src:
                            a = s.view_src
                            s = _Tensor.from_address(a)
                        self.weights[_weight_name(s.name)] = (a, s.type, int(lib.ggml_nbytes(a)))
            except BaseException as e:
                self.error = self.error or e
            return False

        self._cb = L.ggml_backend_sched_eval_callback(seen)  # alive while the context is
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.load_mode = L.LLAMA_LOAD_MODE_NONE  # read into host buffers: writable, not mapped
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise EdgekitError(f"{path}: llama.cpp cannot load it")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        n = window * n_windows
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n
        cp.n_seq_max = n_windows
        cp.kv_unified = True  # one cache of n cells; the sequences are kept apart by the mask
        cp.n_threads = cp.n_threads_batch = threads or os.cpu_count() or 1
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        cp.cb_eval = self._cb
        cp.cb_eval_user_data = None
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise EdgekitError(f"{path}: llama.cpp could not make a context of {n} tokens")
        self.batch = L.llama_batch_init(n, 0, n_windows)
        np.ctypeslib.as_array(self.batch.n_seq_id, (n,))[:] = 1
        for i in range(n):
            self.batch.seq_id[i][0] = i // window
        np.ctypeslib.as_array(self.batch.pos, (n,))[:] = np.tile(np.arange(window, dtype=np.int32), n_windows)
        flags = np.zeros((n_windows, window), np.int8)
        flags[:, SKIP : window - 1] = 1
        np.ctypeslib.as_array(self.batch.logits, (n,))[:] = flags.ravel()
        self.batch.n_tokens = n

    def log_probs(self, windows: np.ndarray) -> np.ndarray:
        """float32 log-softmax of the scored rows of the windows (n_windows x window tokens),
        window after window."""
        import numpy as np

        L = self.L
        n = self.window * self.n_windows
        np.ctypeslib.as_array(self.batch.token, (n,))[:] = np.asarray(windows, np.int32).ravel()
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        rc = L.llama_decode(self.ctx, self.batch)
        if self.error is not None:
            raise self.error
        if rc != 0:
            raise EdgekitError(f"llama.cpp could not evaluate the calibration slice (llama_decode {rc})")
        rows = self.n_windows * (self.window - 1 - SKIP)
        ptr = ctypes.cast(L.llama_get_logits(self.ctx), ctypes.POINTER(ctypes.c_float))
        x = np.ctypeslib.as_array(ptr, (rows, self.n_vocab)).astype(np.float32)
        x -= x.max(-1, keepdims=True)
        x -= np.log(np.exp(x).sum(-1, keepdims=True))
        return x

    def set_weight(self, name: str, values: np.ndarray) -> None:
        import numpy as np

        addr, type_id, nbytes = self.weights[name]
        if type_id == ggml_types.get("F32").id:
            data = np.ascontiguousarray(values, np.float32)
        elif type_id == ggml_types.get("F16").id:
            data = np.ascontiguousarray(values, np.float16)
        elif type_id == ggml_types.get("BF16").id:
            import gguf

            data = gguf.quants.quantize(
                np.ascontiguousarray(values, np.float32), gguf.GGMLQuantizationType.BF16
            )
        else:
            raise EdgekitError(f"{name}: the reference holds it as ggml type {type_id}, not a float type")
        if data.nbytes != nbytes:
            raise EdgekitError(f"{name}: {data.nbytes} bytes of values for a tensor of {nbytes}")
        from edgekit.quantize.imatrix_llamacpp import _Tensor

        t = _Tensor.from_address(addr)
        if not (t.buffer and t.data and self.lib.ggml_backend_buffer_is_host(t.buffer)):
            raise EdgekitError(f"{name}: the weights are not in host memory (sensitivity runs on the CPU)")
        ctypes.memmove(t.data, data.ctypes.data, nbytes)  # weights loaded without mmap: writable

    def close(self) -> None:
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)


def calibration_windows(model: FakeQuantModel, text: str, windows: int) -> np.ndarray:
    import numpy as np

    from edgekit.quantize.imatrix_llamacpp import tokenize

    L = model.L
    ids = tokenize(model.vocab, text)
    n = min(windows, len(ids) // model.window)
    if n < 1:
        raise EdgekitError(
            f"the calibration text has {len(ids)} tokens, fewer than one window of {model.window}"
        )
    # windows spread over the text, not only its beginning
    step = len(ids) // n
    wins = np.stack([np.asarray(ids[i * step : i * step + model.window], np.int32) for i in range(n)])
    if L.llama_vocab_get_add_bos(model.vocab):
        wins[:, 0] = L.llama_vocab_bos(model.vocab)
    return wins


def _count_windows(reference: Path, text: str, window: int, windows: int) -> int:
    """How many windows of `window` tokens the calibration text holds (at most `windows`)."""
    import llama_cpp as L

    from edgekit.quantize.imatrix_llamacpp import tokenize

    mp = L.llama_model_default_params()
    mp.vocab_only = True
    model = L.llama_model_load_from_file(str(reference).encode(), mp)
    if not model:
        raise EdgekitError(f"{reference}: llama.cpp cannot load its vocabulary")
    try:
        n = len(tokenize(L.llama_model_get_vocab(model), text)) // window
    finally:
        L.llama_model_free(model)
    if n < 1:
        raise EdgekitError(f"the calibration text has fewer tokens than one window of {window}")
    return min(windows, n)


def measure(
    reference: Path,
    ladders: Mapping[str, Sequence[str]],
    groups: Mapping[str, Sequence[str]],
    probes: Mapping[str, Sequence[str]],
    imatrix: Mapping[str, np.ndarray] | None,
    text: str,
    window: int = 256,
    windows: int = 2,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Every tensor's weighted error at every type of `ladders[tensor]`, and the KLD of each
    group of `groups` with its tensors at each of their probe types (`probes[tensor]`, the
    i-th move of a group takes each tensor to its i-th probe); see the module."""
    import numpy as np

    from edgekit.gguf_io.reader import open_reader
    from edgekit.quantize import tensor_cache
    from edgekit.quantize.imatrix_llamacpp import _quiet_log

    t0 = time.perf_counter()
    import llama_cpp

    names = [n for g in groups.values() for n in g]
    if sorted(names) != sorted(ladders):
        raise EdgekitError("sensitivity: the groups do not hold every tensor of the ladders exactly once")
    reader = open_reader(reference)
    values = {t.name: t for t in reader.tensors if t.name in ladders}
    missing = sorted(set(ladders) - set(values))
    if missing:
        raise EdgekitError(f"{reference} lacks tensors of the mix: {', '.join(missing[:3])}")
    n_moves = {g: min(len(probes[n]) for n in ns) for g, ns in groups.items()}
    todo = sum(len(v) for v in ladders.values()) + sum(n_moves.values()) + 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, todo)

    # 1. every type of every tensor: its weighted error; the probe types' bytes kept
    cache = tensor_cache.open_cache()
    errors: dict[str, dict[str, float]] = {}
    kept: dict[tuple[str, str], Any] = {}
    for name in ladders:
        x = f32_rows(values[name])
        imp = imatrix.get(name) if imatrix else None
        step = row_step(x.shape[1])
        xs = np.ascontiguousarray(x[:, ::step])
        share = x.shape[1] / xs.shape[1]
        errs = {}
        for ty in ladders[name]:
            if step == 1 or ty in probes[name]:  # the whole tensor, through the tensor cache
                q = cached_quantize(cache, x, ty, imp, threads)
                d = dequantize(q, ty, x.size).reshape(x.shape)[:, ::step]
                if ty in probes[name]:
                    kept[name, ty] = q
            else:  # its sampled rows
                d = dequantize(quantize_tensor(xs, ty, imp, threads), ty, xs.size).reshape(xs.shape)
            errs[ty] = share * weighted_error(xs, d, imp)
            tick()
        errors[name] = errs
    t_errors = time.perf_counter() - t0

    # 2. the group moves, on the reference in llama.cpp
    out = Sensitivity(errors, {g: list(ns) for g, ns in groups.items()})
    out.errors_seconds = round(t_errors, 1)
    out.tensor_cache = cache.stats.to_dict() if cache is not None else None
    t1 = time.perf_counter()
    with _quiet_log(llama_cpp):
        n_win = _count_windows(reference, text, window, windows)
        model = FakeQuantModel(reference, window, threads, n_win)
        try:
            wins = calibration_windows(model, text, n_win)
            ref_lp = model.log_probs(wins)
            unknown = sorted(set(ladders) - set(model.weights))
            if unknown:
                raise EdgekitError(
                    f"llama.cpp's graph does not use {', '.join(unknown[:3])}: cannot measure it"
                )
            p = np.exp(ref_lp)
            out.positions = ref_lp.shape[0]
            out.evaluations = 1
            tick()
            for g, ns in groups.items():
                for i in range(n_moves[g]):
                    types = {n: probes[n][i] for n in ns}
                    for n in ns:
                        x = values[n]
                        model.set_weight(n, dequantize(kept[n, types[n]], types[n], math.prod(x.shape)))
                    q = model.log_probs(wins)
                    dkld = float((p * (ref_lp - q)).sum(-1, dtype=np.float64).mean())
                    out.moves.append(GroupMove(g, types, dkld))
                    out.evaluations += 1
                    for n in ns:  # the reference's values back
                        model.set_weight(n, f32_rows(values[n]))
                    tick()
        finally:
            model.close()
    out.forward_seconds = round(time.perf_counter() - t1, 1)
    out.seconds = round(time.perf_counter() - t0, 1)
    return out
