"""Architecture facts of a decoder-only transformer, and what follows from them.

Everything here is read from a catalogue entry or a `config.json`; nothing is guessed from
other fields (Qwen3's head_dim is 128 while hidden/heads is 80 for Qwen3-4B). The tensor
inventory (`tensors()`) is the single source for parameter counts, file sizes and the
bytes read per decoded token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Architectures whose tensor layout edgekit knows. The key is HF's `model_type`.
DENSE_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma3", "gemma3_text", "phi3", "smollm3"}
MOE_FAMILIES = {"qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "deepseek_v2"}
KNOWN_FAMILIES = DENSE_FAMILIES | MOE_FAMILIES


@dataclass(frozen=True)
class Tensor:
    """One weight tensor, named as llama.cpp names it in a GGUF file.

    shape follows GGUF order: shape[0] is the row length (input features), shape[1] the
    number of rows (output features), shape[2] the number of experts for stacked experts.
    """

    name: str
    shape: tuple[int, ...]
    role: str  # embed, output, norm, attn, ffn, router, expert, shared_expert, bias
    layer: int = -1

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) >= 2


@dataclass(frozen=True)
class Arch:
    family: str  # HF model_type
    n_layers: int
    hidden: int
    ffn: int  # dense MLP width (0 if every layer is MoE)
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    max_context: int
    rope_theta: float = 10000.0
    qk_norm: bool = False
    qkv_bias: bool = False
    # MoE
    n_experts: int = 0
    experts_per_token: int = 0
    expert_ffn: int = 0
    n_shared_experts: int = 0
    shared_expert_ffn: int = 0
    first_dense_layers: int = 0  # DeepSeek's first_k_dense_replace
    # DeepSeek multi-head latent attention
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # sliding-window attention: every `sliding_window_pattern`-th layer is global
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    # parameters outside the language model (vision tower, multi-token-prediction head):
    # counted in the checkpoint, not in a text-only GGUF, not read per token
    extra_params: int = 0
    extra_params_note: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    # ---- derived facts -------------------------------------------------------------

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def n_gqa(self) -> int:
        return self.n_heads // max(1, self.n_kv_heads)

    def is_moe_layer(self, i: int) -> bool:
        return self.is_moe and i >= self.first_dense_layers

    def is_sliding_layer(self, i: int) -> bool:
        if not self.sliding_window:
            return False
        if not self.sliding_window_pattern:
            return True
        return (i + 1) % self.sliding_window_pattern != 0

    def kv_elements_per_token_layer(self) -> int:
        """K and V elements cached per token in one layer."""
        if self.uses_mla:
            # the compressed latent plus the decoupled RoPE key, as llama.cpp and vLLM cache it
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.n_kv_heads * self.head_dim

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """KV cache per token at full attention (no sliding window applied)."""
        return self.n_layers * self.kv_elements_per_token_layer() * bytes_per_element

    def kv_bytes(self, ctx: int, bytes_per_element: float = 2.0, seqs: int = 1) -> float:
        """KV cache for `seqs` sequences of `ctx` tokens; sliding layers keep only their window."""
        per_layer = self.kv_elements_per_token_layer() * bytes_per_element
        total = 0.0
        for i in range(self.n_layers):
            tokens = min(ctx, self.sliding_window) if self.is_sliding_layer(i) else ctx
            total += tokens * per_layer
        return total * seqs

    # ---- tensor inventory ----------------------------------------------------------

    def tensors(self) -> list[Tensor]:
        """Every weight of the language model, in GGUF order and with GGUF names."""
        from edgekit.models.tensors import inventory

        return inventory(self)

    def param_counts(self) -> tuple[int, int]:
        """(total, active) parameters of the language model, plus `extra_params` in total.

        Active counts the weights one token runs through: every dense weight and the
        routed experts it is sent to (experts_per_token of n_experts). Like the published
        figures (Qwen3-30B-A3B: 3.3B active) it counts the whole embedding matrices.
        """
        total = 0
        active = 0.0
        for t in self.tensors():
            n = t.n_elements
            total += n
            active += n * self.experts_per_token / self.n_experts if t.role == "expert" else n
        return total + self.extra_params, int(round(active))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d
