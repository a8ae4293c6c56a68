"""Tokenizer metadata for a GGUF file, from a Hugging Face tokenizer.json (byte-level BPE).

llama.cpp picks its pre-tokenizer (how text is split before BPE) by the name stored in
`tokenizer.ggml.pre`; a wrong name tokenizes differently without any error. We recognise
the pre-tokenizer from tokenizer.json itself and refuse what we do not recognise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

# Split patterns of the pre-tokenizers llama.cpp knows by name (facts read from the
# tokenizer.json files of Qwen2/Qwen3 and Llama-3; they differ in how digits group)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_HF_PRE: dict[str, dict[str, Any]] = {
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ],
    },
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    },
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    },
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
}

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def hf_pre_tokenizer_for(name: str) -> dict[str, Any] | None:
    """The tokenizer.json pre_tokenizer that behaves like llama.cpp's pre-tokenizer `name`."""
    return _HF_PRE.get(name)


def llama_pre_name(pre: dict[str, Any] | None, source: str = "tokenizer.json") -> str:
    """Name llama.cpp uses for this tokenizer.json pre_tokenizer."""
    if not isinstance(pre, dict):
        raise EdgekitError(f"{source}: no pre_tokenizer; edgekit cannot tell how llama.cpp should split text")
    parts: list[dict[str, Any]] = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    split = next((p for p in parts if p.get("type") == "Split"), None)
    if split is not None and kinds == ["Split", "ByteLevel"]:
        pattern = (split.get("pattern") or {}).get("Regex")
        if pattern == _QWEN2_SPLIT:
            return "qwen2"
        if pattern == _LLAMA3_SPLIT:
            return "llama-bpe"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex"):
        return "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise EdgekitError(
        f"{source}: pre-tokenizer {json.dumps(pre)[:120]} is not one edgekit can name for llama.cpp",
        "known: Qwen2/Qwen3, Llama-3, SmolLM, GPT-2 byte-level BPE",
    )


def bpe_vocab(tokenizer_dir: Path, vocab_size: int) -> dict:
    """tokens, token types and the pre-tokenizer name of a byte-level BPE tokenizer."""
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise EdgekitError(f"{tokenizer_dir}: no tokenizer.json (a GGUF needs the tokenizer)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise EdgekitError(f"{path}: unreadable tokenizer ({type(e).__name__})") from None
    if model.get("type") != "BPE":
        raise EdgekitError(
            f"{path}: tokenizer model {model.get('type')!r} is not supported yet (byte-level BPE only)"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    for tid, t in added.items():
        vocab[t["content"]] = tid
    by_id = {i: tok for tok, i in vocab.items()}
    if by_id and max(by_id) >= vocab_size:
        raise EdgekitError(f"{path}: token id {max(by_id)} does not fit the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return {"tokens": tokens, "types": types, "pre": llama_pre_name(data.get("pre_tokenizer"), str(path))}
