"""Ask llama.cpp itself which type it gives each tensor, without a model file.

libllama exports (C++-mangled) the helpers llama.cpp's own type-selection test uses:
a mock model from hyper-parameters, a quantize state, and the type computation. Run as a
script in a child process (a C++ exception there ends the process, not the test run):
reads a JSON job on stdin, prints {ftype: {tensor: type}} as JSON.
"""

import ctypes
import json
import re
import sys
from pathlib import Path


def main() -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as L

    job = json.load(sys.stdin)
    libdir = Path(llama_cpp.__file__).parent / "lib"
    base = ctypes.CDLL(str(libdir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    ll = ctypes.CDLL(str(libdir / "libllama.so"), mode=ctypes.RTLD_GLOBAL)

    class InitParams(ctypes.Structure):
        _fields_ = [
            ("mem_size", ctypes.c_size_t),
            ("mem_buffer", ctypes.c_void_p),
            ("no_alloc", ctypes.c_bool),
        ]

    class Desc(ctypes.Structure):
        _fields_ = [("architecture", ctypes.c_char_p)] + [
            (n, ctypes.c_uint32)
            for n in (
                "n_embd",
                "n_ff",
                "n_layer",
                "n_head",
                "n_head_kv",
                "n_expert",
                "n_embd_head_k",
                "n_embd_head_v",
            )
        ]

    base.ggml_init.argtypes = [InitParams]
    base.ggml_init.restype = ctypes.c_void_p
    base.ggml_tensor_overhead.restype = ctypes.c_size_t
    base.ggml_new_tensor_4d.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 4
    base.ggml_new_tensor_4d.restype = ctypes.c_void_p
    base.ggml_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_set_name.restype = ctypes.c_void_p
    base.ggml_type_name.argtypes = [ctypes.c_int]
    base.ggml_type_name.restype = ctypes.c_char_p
    model_from = ll._Z31llama_quant_model_from_metadataPK22llama_quant_model_desc
    model_from.argtypes = [ctypes.POINTER(Desc)]
    model_from.restype = ctypes.c_void_p
    init = ll._Z16llama_quant_initPK11llama_modelPK27llama_model_quantize_params
    init.argtypes = [ctypes.c_void_p, ctypes.POINTER(L.llama_model_quantize_params)]
    init.restype = ctypes.c_void_p
    allows = ll._Z38llama_quant_tensor_allows_quantizationPK19quantize_state_implPK11ggml_tensor
    allows.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    allows.restype = ctypes.c_bool
    compute = ll._Z25llama_quant_compute_typesP19quantize_state_impl11llama_ftypePP11ggml_tensorP9ggml_typem
    compute.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_size_t,
    ]

    hp = job["hparams"]
    desc = Desc(
        job["arch"].encode(),
        *(
            hp[k]
            for k in ("n_embd", "n_ff", "n_layer", "n_head", "n_head_kv", "n_expert", "head_k", "head_v")
        ),
    )
    model = model_from(ctypes.byref(desc))
    params = L.llama_model_quantize_default_params()
    keep = []
    if job.get("overrides"):
        arr = (L.llama_model_tensor_override * (len(job["overrides"]) + 1))()
        for i, (pattern, type_id) in enumerate(job["overrides"]):
            arr[i].pattern = pattern.encode()
            arr[i].type = type_id
        arr[len(job["overrides"])].pattern = None
        arr[len(job["overrides"])].type = 43
        keep.append(arr)
        params.tt_overrides = ctypes.cast(arr, ctypes.POINTER(L.llama_model_tensor_override))
    qs = init(model, ctypes.byref(params))
    tensors = job["tensors"]
    ctx = base.ggml_init(InitParams(len(tensors) * base.ggml_tensor_overhead() + 1024, None, True))
    made = []
    for name, shape in tensors:
        t = base.ggml_new_tensor_4d(ctx, 0, *(list(shape) + [1] * (4 - len(shape))))
        base.ggml_set_name(t, name.encode())
        made.append((name, t))
    quantizable = [(n, t) for n, t in made if allows(qs, t)]

    def order(item):
        m = re.match(r"blk\.(\d+)\.", item[0])
        return (int(m.group(1)) if m else -1, item[0].encode())

    quantizable.sort(key=order)
    ptrs = (ctypes.c_void_p * len(quantizable))(*[t for _, t in quantizable])
    result = {}
    for ftype in job["ftypes"]:
        out = (ctypes.c_int * len(quantizable))()
        compute(qs, ftype, ptrs, out, len(quantizable))
        types = {n: None for n, _ in made}
        for i, (n, _) in enumerate(quantizable):
            types[n] = base.ggml_type_name(out[i]).decode().upper()
        result[str(ftype)] = types
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
