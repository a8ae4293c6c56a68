"""Read architecture facts from a Hugging Face `config.json` (dense and MoE).

head_dim is read when the config states it; only when it is absent do we use
hidden_size / num_attention_heads, which is what transformers itself does in that case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError
from edgekit.models.arch import KNOWN_FAMILIES, Arch

# HF defaults for tie_word_embeddings differ by family (PretrainedConfig's is True).
_TIED_DEFAULT = {"gemma3": True, "gemma3_text": True}

# Keys that official configs leave to transformers' class defaults (Gemma3TextConfig):
# gemma-3-4b-it's text_config states neither its heads nor its vocabulary.
_FAMILY_DEFAULTS = {
    "gemma3": {
        "vocab_size": 262208,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "rope_theta": 1000000.0,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
    },
}


def load_config_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read: {e}") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(path, None, f"not valid JSON (line {e.lineno}, column {e.colno})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(path, None, "expected a JSON object")
    return cfg


def arch_from_config(cfg: dict[str, Any], source: str | Path = "config.json") -> Arch:
    """Build an Arch from a parsed config.json; `source` names the file in errors."""
    top_type = cfg.get("model_type")
    text = cfg.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" in text:
        # multimodal wrappers (Gemma-3 4B+) keep the language model in text_config
        inner = dict(text)
        inner.setdefault("model_type", top_type)
        if top_type == "gemma3":
            inner["model_type"] = "gemma3"
        inner.setdefault(
            "tie_word_embeddings", cfg.get("tie_word_embeddings", _TIED_DEFAULT.get(top_type, True))
        )
        cfg = inner
    if cfg.get("model_type") == "gemma3_text":
        cfg = {**cfg, "model_type": "gemma3"}
    cfg = {**_FAMILY_DEFAULTS.get(cfg.get("model_type"), {}), **cfg}
    r = _Reader(cfg, source)
    family = r.str("model_type")
    if family not in KNOWN_FAMILIES:
        raise ConfigError(
            source,
            "model_type",
            f"unsupported architecture '{family}' (known: {', '.join(sorted(KNOWN_FAMILIES))})",
        )
    hidden = r.int("hidden_size")
    n_heads = r.int("num_attention_heads")
    n_kv = r.int("num_key_value_heads", default=n_heads)
    head_dim = r.int("head_dim", default=0) or hidden // n_heads
    n_experts = (
        r.int("num_experts", default=0)
        or r.int("num_local_experts", default=0)
        or r.int("n_routed_experts", default=0)
    )
    is_moe = n_experts > 1
    expert_ffn = r.int("moe_intermediate_size", default=0) if is_moe else 0
    if is_moe and not expert_ffn:
        # Mixtral's experts are full-width MLPs
        expert_ffn = r.int("intermediate_size")
    shared = 0
    if is_moe:
        n_shared = r.int("n_shared_experts", default=0)
        shared = n_shared * expert_ffn if n_shared else r.int("shared_expert_intermediate_size", default=0)
    first_dense = r.int("first_k_dense_replace", default=0) if is_moe else 0
    ffn = r.int("intermediate_size", default=0)
    if not is_moe and not ffn:
        raise ConfigError(source, "intermediate_size", "missing (needed for a dense model)")
    sliding = r.int("sliding_window", default=0, allow_null=True)
    pattern = r.int("sliding_window_pattern", default=0)
    layer_types = cfg.get("layer_types")
    if sliding and isinstance(layer_types, list) and layer_types and not pattern:
        n_full = sum(1 for t in layer_types if t == "full_attention")
        pattern = len(layer_types) // n_full if n_full else 0
        if n_full == 0:
            pattern = 0
    if cfg.get("use_sliding_window") is False:
        sliding = 0
    max_ctx = r.int("max_position_embeddings", default=0) or 4096
    if sliding and sliding >= max_ctx:
        sliding = 0
    return Arch(
        family=family,
        n_layers=r.int("num_hidden_layers"),
        hidden=hidden,
        ffn=ffn if (not is_moe or first_dense) else 0,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        vocab=r.int("vocab_size"),
        tied_embeddings=r.bool("tie_word_embeddings", default=_TIED_DEFAULT.get(family, False)),
        max_context=max_ctx,
        rope_theta=r.float("rope_theta", default=_rope_theta(cfg)),
        qk_norm=family in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text"),
        qkv_bias=family in ("qwen2", "qwen2_moe")
        or (family != "qwen3" and bool(cfg.get("attention_bias", False))),
        n_experts=n_experts if is_moe else 0,
        experts_per_token=r.int("num_experts_per_tok", default=0) if is_moe else 0,
        expert_ffn=expert_ffn,
        n_shared_experts=r.int("n_shared_experts", default=1 if shared else 0) if is_moe else 0,
        shared_expert_ffn=shared,
        first_dense_layers=first_dense,
        q_lora_rank=r.int("q_lora_rank", default=0, allow_null=True),
        kv_lora_rank=r.int("kv_lora_rank", default=0),
        qk_nope_head_dim=r.int("qk_nope_head_dim", default=0),
        qk_rope_head_dim=r.int("qk_rope_head_dim", default=0),
        v_head_dim=r.int("v_head_dim", default=0),
        sliding_window=sliding,
        sliding_window_pattern=pattern,
    )


def _rope_theta(cfg: dict) -> float:
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if isinstance(rp, dict) and isinstance(rp.get("rope_theta"), int | float):
        return float(rp["rope_theta"])
    return 10000.0


class _Reader:
    """Typed access to config keys; every problem names the file and the key."""

    def __init__(self, cfg: dict, source):
        self.cfg, self.source = cfg, source

    def _get(self, key, default, allow_null=False):
        if key not in self.cfg:
            if default is _REQUIRED:
                raise ConfigError(self.source, key, "missing")
            return default
        v = self.cfg[key]
        if v is None and (allow_null or default is not _REQUIRED):
            return default
        return v

    def int(self, key: str, default: Any = None, allow_null: bool = False) -> int:
        d = _REQUIRED if default is None else default
        v = self._get(key, d, allow_null)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ConfigError(self.source, key, f"expected an integer, got {v!r}")
        if v < 0 or (d is _REQUIRED and v == 0):
            raise ConfigError(self.source, key, f"expected a positive integer, got {v}")
        return v

    def float(self, key: str, default: float) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(self.source, key, f"expected a number, got {v!r}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(self.source, key, f"expected true or false, got {v!r}")
        return v

    def str(self, key: str) -> str:
        v = self._get(key, _REQUIRED)
        if not isinstance(v, str):
            raise ConfigError(self.source, key, f"expected a string, got {v!r}")
        return v


_REQUIRED = object()
