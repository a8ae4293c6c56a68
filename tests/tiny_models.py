"""Tiny real models for tests: a byte-level BPE tokenizer trained here and small Qwen3 /
Qwen3-MoE models built from a config and trained for a few steps so their logits are not
flat. Nothing is downloaded. Shapes are multiples of 256 so k-quants apply without fallback."""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def training_text() -> str:
    """A frozen snapshot of our own files (the README and the package sources as of 2026-12):
    read from the live tree, every edit to the package retrained the tiny models, so a test
    with a tolerance could flip on an unrelated commit."""
    return (Path(__file__).parent / "tiny_corpus.txt").read_text(encoding="utf-8")


def build_tokenizer(out: Path, vocab_size: int = 600) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(training_text().splitlines(), trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "add_bos_token": False,
                "model_max_length": 4096,
                "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                "{{ m['content'] }}<|im_end|>\n{% endfor %}",
            }
        )
    )
    return out


def build_model(out: Path, tokenizer_dir: Path, moe: bool, steps: int = 40, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    vocab = 640  # larger than the tokenizer: llama.cpp sees padding tokens too
    eos = tok.token_to_id("<|im_end|>")
    common = dict(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        rope_theta=1e6,
        tie_word_embeddings=False,
        eos_token_id=eos,
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    if moe:
        cfg = Qwen3MoeConfig(
            intermediate_size=512,
            moe_intermediate_size=256,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            **common,
        )
        model = Qwen3MoeForCausalLM(cfg)
    else:
        cfg = Qwen3Config(intermediate_size=512, **common)
        model = Qwen3ForCausalLM(cfg)
    train(model, tok, steps, windows=64)
    return save_checkpoint(model, tokenizer_dir, out)


def train(model, tok, steps: int, windows: int) -> None:
    """A few optimiser steps on our own sources, so the logits are not flat."""
    import torch

    ids = torch.tensor(tok.encode(training_text()).ids[: windows * 128]).view(-1, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = ids[(step * 8) % len(ids) :][:8]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def save_checkpoint(model, tokenizer_dir: Path, out: Path, card: str | None = None) -> Path:
    """The model as a Hugging Face directory with the tiny tokenizer and a model card."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / f, out / f)
    card = card or "---\nlicense: apache-2.0\n---\nA tiny test model built by edgekit's tests.\n"
    (out / "README.md").write_text(card)
    return out
