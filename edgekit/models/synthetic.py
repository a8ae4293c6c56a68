"""Random-weight checkpoints with a real model's shapes (Qwen3 dense and MoE), for measuring
speed and memory where the real weights cannot be downloaded: the tensors, config.json and
dtype are exactly what the real checkpoint has, only the values are random (uniform, std
0.02; norms 1), optionally with fewer layers. Written as Hugging Face safetensors one tensor
at a time, so a checkpoint larger than memory can be made.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models.arch import Arch, arch_family, model_types_supported_by


def hf_tensors(arch: Arch, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a Qwen3 / Qwen3-MoE checkpoint, PyTorch (out, in) order."""
    h, hd, nh, nkv = arch.hidden, arch.head_dim, arch.n_heads, arch.n_kv_heads
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (arch.vocab, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (nh * hd, h)),
            (p + "self_attn.k_proj.weight", (nkv * hd, h)),
            (p + "self_attn.v_proj.weight", (nkv * hd, h)),
            (p + "self_attn.o_proj.weight", (h, nh * hd)),
            (p + "self_attn.q_norm.weight", (hd,)),
            (p + "self_attn.k_norm.weight", (hd,)),
        ]
        if arch.is_moe:
            f = arch.expert_ffn
            out.append((p + "mlp.gate.weight", (arch.n_experts, h)))
            for e in range(arch.n_experts):
                q = f"{p}mlp.experts.{e}."
                out += [
                    (q + "gate_proj.weight", (f, h)),
                    (q + "up_proj.weight", (f, h)),
                    (q + "down_proj.weight", (h, f)),
                ]
        else:
            out += [
                (p + "mlp.gate_proj.weight", (arch.ffn, h)),
                (p + "mlp.up_proj.weight", (arch.ffn, h)),
                (p + "mlp.down_proj.weight", (h, arch.ffn)),
            ]
    out.append(("model.norm.weight", (h,)))
    if not arch.tied_embeddings:
        out.append(("lm_head.weight", (arch.vocab, h)))
    return out


def hf_config(arch: Arch, layers: int, max_context: int | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": [arch_family(arch).hf_class],
        "model_type": arch.family,
        "hidden_size": arch.hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": arch.n_heads,
        "num_key_value_heads": arch.n_kv_heads,
        "head_dim": arch.head_dim,
        "vocab_size": arch.vocab,
        "max_position_embeddings": max_context or arch.max_context,
        "rope_theta": arch.rope_theta,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": arch.tied_embeddings,
        "attention_bias": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": None,
        "eos_token_id": 0,
    }
    if arch.is_moe:
        cfg |= {
            "num_experts": arch.n_experts,
            "num_experts_per_tok": arch.experts_per_token,
            "moe_intermediate_size": arch.expert_ffn,
            "intermediate_size": arch.expert_ffn * arch.experts_per_token,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
        }
    else:
        cfg["intermediate_size"] = arch.ffn
    return cfg


def random_checkpoint(
    model: str,
    out: Path,
    layers: int | None = None,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    max_context: int | None = None,
) -> Path:
    """Write a random-weight BF16 checkpoint shaped like `model` (a catalogue name) to `out`.
    A tokenizer (tokenizer.json + tokenizer_config.json) is copied from `tokenizer_dir`; its
    vocabulary must not exceed the model's."""
    import numpy as np

    from edgekit.atomic import replace_dir
    from edgekit.models.catalogue import resolve

    entry = resolve(model)
    arch = entry.arch
    if not arch_family(arch).supports("synthetic"):
        supported = ", ".join(model_types_supported_by("synthetic"))
        raise EdgekitError(f"random checkpoints are built for {supported}, not {arch.family}")
    layers = layers or arch.n_layers
    if not 1 <= layers <= arch.n_layers:
        raise EdgekitError(f"--layers must be between 1 and {arch.n_layers}")
    tensors = hf_tensors(arch, layers)
    header, offset = {}, 0
    for name, shape in tensors:
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {
        "format": "pt",
        "edgekit": f"random weights shaped like {entry.name}, seed {seed}",
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    half = 0.02 * math.sqrt(3.0)  # uniform on [-half, half] has std 0.02
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with open(tmp / "model.safetensors", "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for name, shape in tensors:
                n = math.prod(shape)
                if name.endswith("norm.weight"):
                    vals = np.ones(n, np.float32)
                else:
                    vals = rng.random(n, dtype=np.float32) * (2 * half) - half
                fh.write((vals.view(np.uint32) >> 16).astype("<u2").tobytes())  # bf16: the top 16 bits
        (tmp / "config.json").write_text(json.dumps(hf_config(arch, layers, max_context), indent=2))
        if tokenizer_dir is not None:
            for fname in ("tokenizer.json", "tokenizer_config.json"):
                if (Path(tokenizer_dir) / fname).is_file():
                    shutil.copy(Path(tokenizer_dir) / fname, tmp / fname)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    return out
