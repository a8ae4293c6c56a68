"""A checkpoint checked against its architecture before anything is written.

A damaged checkpoint (a layer's projection missing, a config.json that claims more layers
than the weights hold, a tensor of the wrong shape, NaN in a weight) must never become an
artifact that fails where it is deployed. The architecture's own tensor inventory
(`Arch.tensors()`, the planner's) is the reference: every tensor it lists is present with
its shape, nothing else is there but what the family says the converter leaves out
(DeepSeek's multi-token-prediction layers, rotary inv_freq buffers, a tied lm_head), the
layers the weights hold are the layers the config states, and every weight is a float.
Everything here reads the safetensors headers only; the values are checked for NaN/Inf as
the producers read them (`check_finite`), at no extra pass over the weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError
from edgekit.models.arch import Arch, arch_family

if TYPE_CHECKING:
    import numpy as np

    from edgekit.models.weights import SafetensorsCheckpoint

FLOAT_DTYPES = ("F32", "F16", "BF16")
_LAYER = re.compile(r"(?:^|.*\.)layers\.(\d+)\.")
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


class CheckpointMismatch(EdgekitError):
    """The checkpoint's weights are not what its config.json and architecture make them."""


def _listed(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def ignored(arch: Arch, hf_name: str) -> bool:
    """Checkpoint tensors no producer reads: rotary inv_freq buffers and what the family's
    GGUF converter leaves out (DeepSeek-V3's multi-token-prediction layers)."""
    return hf_name.endswith("rotary_emb.inv_freq") or arch_family(arch).gguf_skips(arch, hf_name)


def check_weights(arch: Arch, weights: SafetensorsCheckpoint, float_only: bool = True) -> None:
    """From the headers: the layers the weights hold are the config's, every weight a float."""
    names = [n for n in weights.names() if not ignored(arch, n)]
    layers = {int(m.group(1)) for n in names if (m := _LAYER.match(n))}
    if layers and layers != set(range(arch.n_layers)):
        held = max(layers) + 1
        gaps = sorted(set(range(held)) - layers)
        if held != arch.n_layers:
            raise CheckpointMismatch(
                f"config.json states num_hidden_layers {arch.n_layers}, the weights hold {held} layers"
            )
        raise CheckpointMismatch(f"the weights hold no tensors of layer {_listed([str(g) for g in gaps])}")
    if float_only:
        for n in names:
            dtype = weights.entries[n].dtype
            if dtype not in FLOAT_DTYPES:
                raise CheckpointMismatch(
                    f"tensor {n} is {dtype}; edgekit converts from F32/F16/BF16 checkpoints"
                )


def check_inventory(arch: Arch, found: Iterable[tuple[str, tuple[int, ...], str]]) -> None:
    """`found`: (GGUF name, GGUF shape, checkpoint tensor it comes from) of every tensor a
    producer would write; it must be the architecture's inventory, name for name and shape
    for shape. Shapes in messages are in the checkpoint's order."""
    want = {t.name: t.shape for t in arch.tensors()}
    have = {name: (tuple(shape), source) for name, shape, source in found}
    unexpected = sorted(source or name for name, (_, source) in have.items() if name not in want)
    if unexpected:
        raise CheckpointMismatch(
            f"unexpected tensors for {arch.family} as config.json describes it: {_listed(unexpected)}"
        )
    missing = [n for n in want if n not in have]
    if missing:
        named = [_hf_name(arch, n) for n in missing]
        raise CheckpointMismatch(f"the checkpoint has no tensor {_listed(named)}")
    for name, shape in want.items():
        got, source = have[name]
        if got != tuple(shape):
            raise CheckpointMismatch(
                f"tensor {source or name} has shape {list(reversed(got))}, "
                f"config.json makes it {list(reversed(shape))}"
            )


def _hf_name(arch: Arch, gguf_name: str) -> str:
    """The checkpoint's name of a GGUF tensor where the family states it, with the GGUF name."""
    names = arch_family(arch).hf_tensor_names
    m = _BLOCK.fullmatch(gguf_name)
    template = names.get(f"blk.{{i}}.{m.group(2)}") if m else names.get(gguf_name)
    if template is None or "{e}" in template:
        return gguf_name
    return f"{template.format(i=int(m.group(1)) if m else -1)} ({gguf_name})"


def check_finite(name: str, values: np.ndarray) -> None:
    """Refuse NaN/Inf in a tensor's values as they are read. A float32 sum is non-finite
    when any value is (or, rarely, when finite values overflow it: then look element-wise)."""
    import numpy as np

    if math.isfinite(float(values.sum())) or bool(np.isfinite(values).all()):
        return
    kind = "NaN" if bool(np.isnan(values).any()) else "Inf"
    raise CheckpointMismatch(
        f"tensor {name} holds {kind} values; edgekit does not convert non-finite weights"
    )


def check_finite_model(model) -> None:
    """NaN/Inf refused in a torch model's weights as loaded (llm-compressor, ONNX export)."""
    import torch

    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            kind = "NaN" if bool(torch.isnan(p).any()) else "Inf"
            raise CheckpointMismatch(
                f"tensor {name} holds {kind} values; edgekit does not convert non-finite weights"
            )
