"""llama.cpp's logits of a GGUF file against transformers' of its checkpoint, and a GGUF
file's metadata, for the one-pass converter's per-family tests."""

from __future__ import annotations

from pathlib import Path


def metadata(path: Path) -> dict:
    """Every key but the tokenizer's, with its value."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}


def tensor_table(path: Path) -> dict[str, tuple[int, ...]]:
    from gguf import GGUFReader

    return {t.name: tuple(int(d) for d in t.shape) for t in GGUFReader(path).tensors}


def logits_agree(ck, path: Path, n_ctx: int = 512, n_tokens: int = 384) -> tuple[float, float, float]:
    """(top-1 agreement, max |logit difference|, logit std of transformers) over the first
    `n_tokens` tokens of the evaluation text."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    session = llamacpp.load(path, n_ctx=n_ctx)
    try:
        ids = session.tokenize(default_evaluation_text())[:n_tokens]
        ours = session.logits(ids)
    finally:
        session.close()
    assert len(ids) == n_tokens
    model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()[:, : ours.shape[1]]
    top1 = float((ours.argmax(1) == ref.argmax(1)).mean())
    return top1, float(np.abs(ours - ref).max()), float(ref.std())
