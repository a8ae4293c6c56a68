"""How much KL divergence each tensor costs one type down or up from a base mix, measured.

Method (fake quantization in llama.cpp itself): the model's unquantized GGUF (edgekit's F32
reference; BF16 for large models) is loaded once by llama.cpp with its weights in host memory
(not memory-mapped), and the scheduler's eval callback tells us where each weight tensor lives.
Every quantizable weight is then overwritten with the values its quantized version decodes to
(ggml's own quantizer with the importance matrix, then ggml's own dequantizer), so the model
computes with the base mix's weights. On a short calibration slice (windows of the calibration
text, disjoint from the evaluation text; rows `SKIP..window-2` of each window scored against
the reference's full-vocabulary distribution computed first, with the original weights) we
measure the base mix's KLD, then for each tensor in turn its KLD with only that tensor moved
one type down (and one up) its ladder, and put the base values back. The cost of a move is
the KLD difference. Activations stay float32 (a real quantized model also rounds activations
to 8 bits in its dot products), so the figures rank tensors; the built file is verified on
the evaluation store like any candidate.

One group is one GGUF tensor: per layer and role (attn_q/k/v/output, ffn_gate/up/down), the
token embedding, the output, and for MoE each layer's stacked expert tensors (all experts of a
layer share one type in a GGUF tensor, so the hottest experts cannot get their own).
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types

if TYPE_CHECKING:
    import numpy as np

SKIP = 32  # the first rows of a window are not scored: too little context


@dataclass
class Move:
    type: str
    nbytes: int
    dkld: float  # KLD(base with this tensor at `type`) - KLD(base), on the calibration slice


@dataclass
class Sensitivity:
    base_kld: float
    base: dict[str, str]  # tensor -> base type
    base_bytes: dict[str, int]
    down: dict[str, Move] = field(default_factory=dict)
    up: dict[str, Move] = field(default_factory=dict)
    positions: int = 0
    seconds: float = 0.0
    evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_kld": self.base_kld,
            "base": self.base,
            "base_bytes": self.base_bytes,
            "down": {k: vars(v) for k, v in self.down.items()},
            "up": {k: vars(v) for k, v in self.up.items()},
            "positions": self.positions,
            "seconds": self.seconds,
            "evaluations": self.evaluations,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        return cls(
            d["base_kld"],
            d["base"],
            {k: int(v) for k, v in d["base_bytes"].items()},
            {k: Move(**v) for k, v in d["down"].items()},
            {k: Move(**v) for k, v in d["up"].items()},
            d["positions"],
            d["seconds"],
            d["evaluations"],
        )


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


class FakeQuantModel:
    """The unquantized GGUF in llama.cpp, its weights writable in place."""

    def __init__(self, path: Path, window: int, threads: int | None = None):
        import llama_cpp as L
        import numpy as np

        from edgekit.quantize.imatrix_llamacpp import _ggml, _Tensor, _weight_name

        self.L, self.window = L, window
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
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = window
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = threads or os.cpu_count() or 1
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        cp.cb_eval = self._cb
        cp.cb_eval_user_data = None
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise EdgekitError(f"{path}: llama.cpp could not make a context of {window} tokens")
        self.batch = L.llama_batch_init(window, 0, 1)
        np.ctypeslib.as_array(self.batch.n_seq_id, (window,))[:] = 1
        for i in range(window):
            self.batch.seq_id[i][0] = 0
        np.ctypeslib.as_array(self.batch.pos, (window,))[:] = np.arange(window, dtype=np.int32)
        flags = np.zeros(window, np.int8)
        flags[SKIP : window - 1] = 1
        np.ctypeslib.as_array(self.batch.logits, (window,))[:] = flags
        self.batch.n_tokens = window

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        """float32 log-softmax of the scored rows of one window."""
        import numpy as np

        L = self.L
        np.ctypeslib.as_array(self.batch.token, (self.window,))[:] = tokens
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        rc = L.llama_decode(self.ctx, self.batch)
        if self.error is not None:
            raise self.error
        if rc != 0:
            raise EdgekitError(f"llama.cpp could not evaluate the calibration slice (llama_decode {rc})")
        rows = self.window - 1 - SKIP
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


def measure(
    reference: Path,
    base: Mapping[str, str],
    ladders: Mapping[str, list[str]],
    imatrix: Mapping[str, np.ndarray] | None,
    text: str,
    window: int = 256,
    windows: int = 2,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Each tensor's KLD cost one ladder step down and one up from `base` (see the module)."""
    import numpy as np

    from edgekit.gguf_io.reader import open_reader
    from edgekit.quantize.imatrix_llamacpp import _quiet_log

    t0 = time.perf_counter()
    import llama_cpp

    reader = open_reader(reference)
    values = {t.name: t for t in reader.tensors if t.name in base}
    missing = sorted(set(base) - set(values))
    if missing:
        raise EdgekitError(f"{reference} lacks tensors of the mix: {', '.join(missing[:3])}")

    def f32(name: str) -> np.ndarray:
        t = values[name]
        shape = [int(d) for d in t.shape]  # ne order
        cols = shape[0]
        mats = math.prod(shape[2:]) if len(shape) > 2 else 1
        raw = np.asarray(t.data)
        if t.tensor_type.name == "F32":
            x = raw.astype(np.float32, copy=False)
        else:
            x = dequantize(raw.view(np.uint8), t.tensor_type.name, math.prod(shape))
        return x.reshape(mats, -1, cols)

    decoded: dict[tuple[str, str], tuple[np.ndarray, int]] = {}

    def fake(name: str, ty: str) -> tuple[np.ndarray, int]:
        key = (name, ty)
        if key not in decoded:
            x = f32(name)
            imp = imatrix.get(name) if imatrix else None
            q = quantize_tensor(x, ty, imp, threads)
            decoded[key] = (dequantize(q, ty, x.size), int(q.nbytes))
        return decoded[key]

    with _quiet_log(llama_cpp):
        model = FakeQuantModel(reference, window, threads)
        try:
            wins = calibration_windows(model, text, windows)
            ref_lp = [model.log_probs(w) for w in wins]
            unknown = sorted(set(base) - set(model.weights))
            if unknown:
                raise EdgekitError(
                    f"llama.cpp's graph does not use {', '.join(unknown[:3])}: cannot measure it"
                )
            p = [np.exp(lp) for lp in ref_lp]

            def kld() -> float:
                total = 0.0
                for w, lp, pw in zip(wins, ref_lp, p, strict=True):
                    q = model.log_probs(w)
                    total += float((pw * (lp - q)).sum(-1, dtype=np.float64).mean())
                return total / len(wins)

            base_bytes = {}
            for name, ty in base.items():
                v, nb = fake(name, ty)
                base_bytes[name] = nb
                model.set_weight(name, v)
            out = Sensitivity(kld(), dict(base), base_bytes, positions=len(wins) * (window - 1 - SKIP))
            names = list(base)
            todo = sum(sum(t is not None for t in _neighbours(ladders[n], base[n])) for n in names)
            done = 0
            for name in names:
                down, up = _neighbours(ladders[name], base[name])
                for step, into in ((down, out.down), (up, out.up)):
                    if step is None:
                        continue
                    ty = step
                    v, nb = fake(name, ty)
                    model.set_weight(name, v)
                    into[name] = Move(ty, nb, kld() - out.base_kld)
                    out.evaluations += 1
                    decoded.pop((name, ty), None)
                    done += 1
                    if progress:
                        progress(done, todo)
                model.set_weight(name, fake(name, base[name])[0])
                decoded.pop((name, base[name]), None)
        finally:
            model.close()
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


def _neighbours(ladder: list[str], ty: str) -> list[str | None]:
    i = ladder.index(ty)
    return [ladder[i - 1] if i > 0 else None, ladder[i + 1] if i + 1 < len(ladder) else None]


def weighted_errors(
    reference: Path,
    ladders: Mapping[str, list[str]],
    imatrix: Mapping[str, np.ndarray] | None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Each tensor's quantization error at each type of its ladder, weighted as the model sees
    it: sum over columns of importance x squared error (the importance matrix holds each input
    column's mean squared activation, so this is the expected squared error a token's matmul
    output picks up; without an importance matrix every column weighs 1). ggml's own
    quantizer (with the importance) and dequantizer, the converter's bytes."""
    import numpy as np

    from edgekit.gguf_io.reader import open_reader

    values = {t.name: t for t in open_reader(reference).tensors if t.name in ladders}
    out: dict[str, dict[str, float]] = {}
    todo, done = sum(len(v) for v in ladders.values()), 0
    for name, lad in ladders.items():
        t = values[name]
        shape = [int(d) for d in t.shape]
        cols = shape[0]
        mats = math.prod(shape[2:]) if len(shape) > 2 else 1
        raw = np.asarray(t.data)
        if t.tensor_type.name == "F32":
            x = raw.astype(np.float32, copy=False)
        else:
            x = dequantize(raw.view(np.uint8), t.tensor_type.name, math.prod(shape))
        x = x.reshape(mats, -1, cols)
        imp = imatrix.get(name) if imatrix else None
        w = np.ones((mats, 1, cols), np.float64)
        if imp is not None:
            w = np.broadcast_to(np.asarray(imp, np.float64).reshape(-1, 1, cols), (mats, 1, cols))
        errs = {}
        for ty in lad:
            d = dequantize(quantize_tensor(x, ty, imp, threads), ty, x.size).reshape(x.shape)
            errs[ty] = float((w * np.square(d - x, dtype=np.float64)).sum())
            done += 1
            if progress:
                progress(done, todo)
        out[name] = errs
    return out
