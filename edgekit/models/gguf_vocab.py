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
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise EdgekitError(f"{source}: pre_tokenizer {json.dumps(pre)[:120]} is not a list of objects")
    kinds = [p.get("type") for p in parts]
    split = next((p for p in parts if p.get("type") == "Split"), None)
    if split is not None and kinds == ["Split", "ByteLevel"]:
        pattern = split.get("pattern")
        pattern = pattern.get("Regex") if isinstance(pattern, dict) else None
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
        kind = model.get("type")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise EdgekitError(f"{path}: unreadable tokenizer ({type(e).__name__})") from None
    if kind != "BPE":
        raise EdgekitError(
            f"{path}: tokenizer model {str(kind)[:40]!r} is not supported yet (byte-level BPE only)"
        )
    try:
        vocab: dict[str, int] = dict(model["vocab"])
        added = {t["id"]: t for t in data.get("added_tokens") or []}
        for tid, t in added.items():
            vocab[t["content"]] = tid
        by_id = {i: tok for tok, i in vocab.items()}
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in by_id):
            raise ValueError("token ids must be non-negative integers")
        if not all(isinstance(t, str) for t in by_id.values()) or not all(
            isinstance(t, dict) for t in added.values()
        ):
            raise TypeError("tokens must be strings")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise EdgekitError(f"{path}: unreadable tokenizer vocabulary ({type(e).__name__})") from None
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


# ---- SentencePiece (tokenizer.model) -----------------------------------------------------
# How llama.cpp's converter lays out a SentencePiece vocabulary (facts read from
# convert_hf_to_gguf.py): every id of the model's vocab_size starts as "[PAD{i}]" with score
# -10000 and type UNUSED; the tokenizer.model's pieces keep their score and get the type the
# model gives them (unknown, control, unused, byte, else normal); added tokens (added_tokens.json,
# then tokenizer_config.json's added_tokens_decoder) replace their ids with score -1000.

_SPM_SPECIAL_NAMES = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
_SPM_SPACE = "\u2581"  # SentencePiece's visible space


def _looks_special(token: str) -> bool:
    # added tokens llama.cpp makes control tokens although their config says "special": false
    # (Gemma's <unusedN> and <mask>, DeepSeek-Coder's <pad> and fullwidth bars)
    return (
        token in _SPM_SPECIAL_NAMES
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EdgekitError(f"{path}: unreadable ({type(e).__name__})") from None


def spm_vocab(tokenizer_dir: Path, vocab_size: int, phi3: bool = False) -> dict:
    """tokens, scores and token types of `tokenizer_dir`'s SentencePiece tokenizer.model and
    its added tokens, as llama.cpp's converter writes them (`phi3`: its Phi-3 reading, where
    added tokens keep their spelling, the config's "special" alone makes a control token and
    tokenizer.json's added tokens count too)."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise EdgekitError(
            "reading a SentencePiece tokenizer.model needs the sentencepiece package",
            "pip install 'edgekit[gguf]'",
        ) from None
    path = tokenizer_dir / "tokenizer.model"
    sp = SentencePieceProcessor()
    try:
        # a protobuf, parsed by sentencepiece itself: no code in it runs
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise EdgekitError(f"{path}: not a SentencePiece model ({str(e).splitlines()[0][:120]})") from None
    n = sp.vocab_size()
    if n > vocab_size:
        raise EdgekitError(
            f"{path}: {n} tokens do not fit the model's vocab_size {vocab_size}",
            "the tokenizer does not belong to this checkpoint",
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(n):
        tokens[i] = sp.IdToPiece(i)
        scores[i] = float(sp.GetScore(i))
        if sp.IsUnknown(i):
            types[i] = UNKNOWN
        elif sp.IsControl(i):
            types[i] = CONTROL
        elif sp.IsUnused(i):
            types[i] = UNUSED
        elif sp.IsByte(i):
            types[i] = BYTE
        else:
            types[i] = NORMAL

    def added(tid: Any, content: Any, special: bool, source: Path) -> None:
        if isinstance(tid, str) and tid.isdigit():
            tid = int(tid)
        if not isinstance(tid, int) or not isinstance(content, str):
            raise EdgekitError(f"{source}: added token {content!r} has no integer id")
        if tid >= vocab_size:
            if phi3:  # llama.cpp's Phi-3 reading would fail on it
                raise EdgekitError(
                    f"{source}: added token {content!r} id {tid} is beyond vocab_size {vocab_size}"
                )
            return  # llama.cpp's converter leaves it out
        if phi3:
            tokens[tid], types[tid] = content, CONTROL if special else USER_DEFINED
        elif special or _looks_special(content):
            tokens[tid], types[tid] = content, CONTROL
        else:
            tokens[tid], types[tid] = content.replace(_SPM_SPACE, " "), USER_DEFINED
        scores[tid] = -1000.0

    if (f := tokenizer_dir / "added_tokens.json").is_file():
        table = _json_file(f)
        if not isinstance(table, dict) or not all(isinstance(v, int) for v in table.values()):
            raise EdgekitError(f"{f}: not a token -> id table")
        for content, tid in table.items():
            if tid < vocab_size:  # llama.cpp's converter leaves the others out, Phi-3's too
                tokens[tid], scores[tid], types[tid] = content, -1000.0, USER_DEFINED
    if (f := tokenizer_dir / "tokenizer_config.json").is_file():
        decoder = (_json_file(f) or {}).get("added_tokens_decoder") or {}
        for tid, t in decoder.items():
            t = t if isinstance(t, dict) else {}
            added(tid, t.get("content"), bool(t.get("special")), f)
    if phi3 and (f := tokenizer_dir / "tokenizer.json").is_file():
        for t in (_json_file(f) or {}).get("added_tokens") or []:
            added(t.get("id"), t.get("content"), bool(t.get("special")), f)
    return {"model": "llama", "pre": "default", "tokens": tokens, "scores": scores, "types": types}


def gguf_vocab(kind: str, tokenizer_dir: Path, vocab_size: int) -> dict:
    """The vocabulary llama.cpp's converter writes for a family whose tokenizer it reads the
    `kind` way (ArchFamily.gguf_vocab): "bpe", "llama" (tokenizer.model when the checkpoint has
    one, else byte-level BPE; tokenizer_config's add_prefix_space kept), "gemma" (tokenizer.model
    when there is one, without a space prefix, else BPE), "phi3" (tokenizer.model unless the
    config names GPT2Tokenizer, as Phi-4's does)."""
    has_spm = (tokenizer_dir / "tokenizer.model").is_file()
    config_file = tokenizer_dir / "tokenizer_config.json"
    config = _json_file(config_file) if config_file.is_file() else {}
    config = config if isinstance(config, dict) else {}
    if kind == "llama":
        out = spm_vocab(tokenizer_dir, vocab_size) if has_spm else bpe_vocab(tokenizer_dir, vocab_size)
        if isinstance(config.get("add_prefix_space"), bool):
            out["add_space_prefix"] = config["add_prefix_space"]
        return out
    if kind == "gemma" and has_spm:
        return spm_vocab(tokenizer_dir, vocab_size) | {"add_space_prefix": False}
    if kind == "phi3" and has_spm and config.get("tokenizer_class") != "GPT2Tokenizer":
        return spm_vocab(tokenizer_dir, vocab_size, phi3=True)
    # (a Phi-3 checkpoint with only a byte-level BPE tokenizer.json, which llama.cpp's converter
    # refuses, is read as one)
    return bpe_vocab(tokenizer_dir, vocab_size)
