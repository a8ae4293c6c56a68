"""Read architecture facts from a Hugging Face `config.json` (dense and MoE).

head_dim is read when the config states it; only when it is absent do we use
hidden_size / num_attention_heads, which is what transformers itself does in that case.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError
from edgekit.models.arch import Arch, ArchFamily, find_arch_family, known_model_types


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
    text = cfg.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" in text:
        # multimodal wrappers (Gemma-3 4B+) keep the language model in text_config
        wrapper = find_arch_family(str(cfg.get("model_type"))) or ArchFamily()
        cfg = wrapper.unwrap_text_config(cfg, text)
    model_type = cfg.get("model_type")
    impl = find_arch_family(model_type) if isinstance(model_type, str) else None
    if impl is not None:
        cfg = impl.normalize_config(cfg)
    r = _Reader(cfg, source)
    family = r.str("model_type")
    if impl is None:
        raise ConfigError(
            source,
            "model_type",
            f"unsupported architecture '{family}' (known: {', '.join(known_model_types())})",
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
        # Mixtral's experts are full-width MLPs (no moe_intermediate_size)
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
    arch = Arch(
        family=family,
        n_layers=r.int("num_hidden_layers"),
        hidden=hidden,
        ffn=ffn if (not is_moe or first_dense) else 0,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        vocab=r.int("vocab_size"),
        tied_embeddings=r.bool("tie_word_embeddings", default=impl.tied_default),
        max_context=max_ctx,
        rope_theta=r.float("rope_theta", default=_rope_theta(cfg)),
        qk_norm=impl.qk_norm,
        qkv_bias=impl.reads_qkv_bias(cfg),
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
    extra = impl.arch_fields(cfg)
    return dataclasses.replace(arch, **extra) if extra else arch


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
