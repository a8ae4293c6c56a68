"""Importance matrices: how strongly each input column of each weight matrix is used.

We run the reference model (transformers, on the calibration text, in windows of `ctx`
tokens) and accumulate, for every matrix in the decoder blocks, the per-column sum of
squared input activations and the number of rows seen; experts separately, counting only
the tokens routed to them. The file is llama.cpp's GGUF imatrix format (`<name>.in_sum2`,
`<name>.counts`, `imatrix.*` keys), so `llama-quantize --imatrix` reads it too. Importance
= in_sum2 / counts per matrix, as llama-quantize computes it; a matrix that saw no tokens
gets importance 1 (no weighting), and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, MissingDependency

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray]  # name -> float32 (nmat, ne0)
    counts: dict[str, np.ndarray]  # name -> float32 (nmat,)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    collector: str = ""  # what computed it: "transformers ..." or "llama.cpp ..." ("" when not recorded)

    def importances(self) -> dict[str, np.ndarray]:
        """name -> flat float32 (nmat * ne0): the per-column mean of squared activations."""
        import numpy as np

        out: dict[str, np.ndarray] = {}
        for name, s in self.sums.items():
            c = self.counts[name]
            imp = np.ones_like(s)
            seen = c > 0
            imp[seen] = s[seen] / c[seen, None]
            out[name] = imp.astype(np.float32).ravel()
        return out

    def unseen_experts(self) -> dict[str, list[int]]:
        """Expert tensors with experts that received no calibration tokens."""
        out = {}
        for name, c in self.counts.items():
            if len(c) > 1:
                missing = [int(i) for i in (c == 0).nonzero()[0]]
                if missing:
                    out[name] = missing
        return out

    def summary(self) -> dict:
        unseen = self.unseen_experts()
        return {
            "entries": len(self.sums),
            "chunks": self.chunk_count,
            "chunk_size": self.chunk_size,
            "datasets": self.datasets,
            "collector": self.collector or None,
            "unseen_experts": {k: v for k, v in sorted(unseen.items())},
        }


def collect(
    checkpoint,
    text: str,
    ctx: int = 512,
    max_chunks: int | None = None,
    dataset: str = "calibration",
    progress: Callable[[int, int], None] | None = None,
) -> Imatrix:
    try:
        import numpy as np
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MissingDependency(
            "torch and transformers", "torch", "needed to compute an importance matrix"
        ) from None
    from edgekit._quiet import quiet_transformers

    quiet_transformers()
    import gguf

    from edgekit.quantize.gguf import SUPPORTED

    tok = AutoTokenizer.from_pretrained(checkpoint.path)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n_chunks = len(ids) // ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise EdgekitError(f"calibration text has {len(ids)} tokens, fewer than one window of {ctx}")
    model = AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=torch.float32)
    model.eval()
    arch = checkpoint.entry.arch
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, SUPPORTED[arch.family]), arch.n_layers)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}

    def add(name: str, x, expert: int = 0, nmat: int = 1):
        x = x.reshape(-1, x.shape[-1]).double()
        s = (x * x).sum(0).float().numpy()
        if name not in sums:
            sums[name] = np.zeros((nmat, s.shape[0]), np.float32)
            counts[name] = np.zeros(nmat, np.float32)
        sums[name][expert] += s
        counts[name][expert] += x.shape[0]

    handles = []
    for mod_name, mod in model.named_modules():
        if not mod_name.startswith("model.layers."):
            continue
        if isinstance(mod, torch.nn.Linear):
            gname = tmap.get_name(mod_name + ".weight", try_suffixes=(".weight",))
            if gname:
                handles.append(mod.register_forward_pre_hook(_linear_hook(gname, add)))
        elif getattr(getattr(mod, "gate_up_proj", None), "ndim", 0) == 3 and hasattr(mod, "down_proj"):
            # stacked experts (a 3-D parameter), not Phi-3's fused gate/up Linear
            m = re.match(r"model\.layers\.(\d+)\.", mod_name)
            assert m is not None  # mod_name starts with "model.layers." and names a block's module
            layer = int(m.group(1))
            handles.append(mod.register_forward_pre_hook(_experts_hook(mod, layer, add)))
    try:
        with torch.no_grad():
            for i in range(n_chunks):
                chunk = torch.tensor([ids[i * ctx : (i + 1) * ctx]])
                model(input_ids=chunk)
                if progress:
                    progress(i + 1, n_chunks)
    finally:
        for h in handles:
            h.remove()
    return Imatrix(sums, counts, [dataset], n_chunks, ctx, collector=torch_collector_name())


def torch_collector_name() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


def _linear_hook(gname, add):
    def hook(module, args):
        add(gname, args[0])

    return hook


def _experts_hook(mod, layer: int, add):
    import torch

    n_exp = mod.gate_up_proj.shape[0]

    def hook(module, args):
        hidden, top_k_index = args[0], args[1]
        for e in range(n_exp):
            token_idx = (top_k_index == e).any(-1).nonzero().flatten()
            if token_idx.numel() == 0:
                continue
            x = hidden[token_idx].float()
            add(f"blk.{layer}.ffn_gate_exps.weight", x, e, n_exp)
            add(f"blk.{layer}.ffn_up_exps.weight", x, e, n_exp)
            gate, up = torch.nn.functional.linear(x, mod.gate_up_proj[e].float()).chunk(2, dim=-1)
            add(f"blk.{layer}.ffn_down_exps.weight", mod.act_fn(gate) * up, e, n_exp)
        # make sure experts that saw nothing still have an entry (counts 0)
        for proj in ("gate", "up", "down"):
            name = f"blk.{layer}.ffn_{proj}_exps.weight"
            width = mod.gate_up_proj.shape[-1] if proj != "down" else mod.down_proj.shape[-1]
            add(name, hidden.new_zeros((0, width)), 0, n_exp)

    return hook


# ---- file format (llama.cpp's GGUF imatrix) ---------------------------------------------------

# edgekit's own key (llama.cpp ignores keys it does not know): which collector computed the file
COLLECTOR_KEY = "edgekit.imatrix.collector"


def save(im: Imatrix, path: Path) -> None:
    import gguf
    import numpy as np

    from edgekit.atomic import atomic_path

    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, arch="")
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", im.datasets or ["unknown"])
        w.add_uint32("imatrix.chunk_count", im.chunk_count)
        w.add_uint32("imatrix.chunk_size", im.chunk_size)
        if im.collector:
            w.add_string(COLLECTOR_KEY, im.collector)
        for name in sorted(im.sums):
            w.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(im.sums[name], dtype=np.float32))
            w.add_tensor(
                f"{name}.counts", np.ascontiguousarray(im.counts[name], dtype=np.float32).reshape(-1, 1)
            )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def load(path: Path) -> Imatrix:
    import numpy as np

    from edgekit.gguf_io.reader import field_value, open_reader

    r = open_reader(path)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    try:
        for t in r.tensors:
            if t.name.endswith((".in_sum2", ".counts")) and t.tensor_type.name != "F32":
                raise ValueError(f"tensor {t.name} is {t.tensor_type.name}, not F32")
            if t.name.endswith(".in_sum2"):
                sums[t.name[: -len(".in_sum2")]] = np.array(t.data, dtype=np.float32).reshape(
                    -1, int(t.shape[0])
                )
            elif t.name.endswith(".counts"):
                counts[t.name[: -len(".counts")]] = np.array(t.data, dtype=np.float32).ravel()
        if not sums or set(sums) != set(counts):
            raise ValueError("needs matching .in_sum2 and .counts tensors")
        datasets = field_value(r, "imatrix.datasets") or []
        if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
            raise ValueError("imatrix.datasets is not a list of strings")
        chunks = [field_value(r, f"imatrix.{k}") or 0 for k in ("chunk_count", "chunk_size")]
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in chunks):
            raise ValueError("imatrix.chunk_count / chunk_size are not integers")
        collector = field_value(r, COLLECTOR_KEY) or ""
        if not isinstance(collector, str):
            raise ValueError(f"{COLLECTOR_KEY} is not a string")
    except ValueError as e:
        raise EdgekitError(f"{path}: not an importance matrix ({e})") from None
    return Imatrix(sums, counts, list(datasets), int(chunks[0]), int(chunks[1]), collector)
