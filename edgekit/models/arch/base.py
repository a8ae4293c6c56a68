"""Architecture facts of a decoder-only transformer, and the architecture families.

`Arch` holds what a catalogue entry or a `config.json` states; nothing is guessed from
other fields (Qwen3's head_dim is 128 while hidden/heads is 80 for Qwen3-4B). Its tensor
inventory (`Arch.tensors()`) is the single source for parameter counts, file sizes and the
bytes read per decoded token.

An architecture family is one class (one module of this package) that answers every
question edgekit has about a Hugging Face `model_type`: how its config.json is read, which
weight tensors it has, what llama.cpp calls it and how the GGUF converter maps its weights,
its quirks in llama.cpp's quantization mixes, and which producers build artifacts from it.
A family registers itself by its class argument::

    class Qwen3(ArchFamily, model_types=("qwen3",)):
        qk_norm = True

and a third party adds one by defining such a class in its own package (registered when
its module is imported), or through the entry-point group ``edgekit.architectures`` (a
module that defines such a class, imported on the first lookup that misses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from edgekit.errors import ConfigError, EdgekitError
from edgekit.plugins import import_group

ENTRY_POINT_GROUP = "edgekit.architectures"

# the producers a family may declare support for
PRODUCERS = (
    "gguf",  # edgekit's one-pass safetensors -> GGUF converter (quantize/gguf.py)
    "llm-compressor",  # GPTQ / AWQ / FP8 compressed-tensors checkpoints
    "onnx",  # torch.onnx export, tested against torch (quantize/onnx_export.py)
    "synthetic",  # random-weight checkpoints with the real shapes (models/synthetic.py)
)


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
    # long-RoPE factor vectors (Phi-3's long context): their length, 0 when none (a GGUF holds
    # them as two F32 tensors)
    rope_factors: int = 0
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

    def kv_row_elements(self) -> tuple[int, int]:
        """(K, V) elements cached per token in one layer."""
        if self.uses_mla:
            # the compressed latent plus the decoupled RoPE key, as llama.cpp and vLLM cache
            # it: one K row, no separate V (V is read out of the latent)
            return self.kv_lora_rank + self.qk_rope_head_dim, 0
        return self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim

    def kv_elements_per_token_layer(self) -> int:
        """K and V elements cached per token in one layer."""
        return sum(self.kv_row_elements())

    def gguf_sliding_layer(self, i: int) -> bool:
        """Whether llama.cpp attends layer `i` through the sliding window (and sizes its KV
        cache to it): a sliding layer of a family whose llama.cpp graph honours the window."""
        if not self.is_sliding_layer(i):
            return False
        family = find_arch_family(self)
        return family is None or family.gguf_slides

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
        return arch_family(self).tensors(self)

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


# ---- architecture families -----------------------------------------------------------------


@dataclass(frozen=True)
class GGUFPiece:
    """One GGUF tensor the converter cuts from a checkpoint tensor (DeepSeek's kv_b_proj
    becomes attn_k_b and attn_v_b). `cut` takes the whole checkpoint tensor (a float32
    numpy array in the checkpoint's order) and returns this piece as a numpy array, whose
    shape is `shape` reversed: matrices, rows, row length."""

    name: str
    shape: tuple[int, ...]  # GGUF order, as Tensor.shape
    cut: Callable[[Any], Any]


def block_tensor(i: int, name: str, shape: tuple[int, ...], role: str) -> Tensor:
    """A tensor of block `i`, named as llama.cpp names it (`blk.{i}.{name}`)."""
    return Tensor(f"blk.{i}.{name}", shape, role, i)


class ArchFamily:
    """What edgekit knows about one or more HF model types; subclass it to add one.

    The defaults describe a Llama-style decoder (separate q/k/v projections, a gated MLP, a
    Qwen/Mixtral-style MoE block); a family overrides only where it differs. Class
    attributes are plain data, methods answer questions that depend on an `Arch`.
    """

    # HF model types this family reads; the first is its name
    model_types: ClassVar[tuple[str, ...]] = ()

    # ---- config.json reading
    # tie_word_embeddings when the config does not say (transformers' class default)
    tied_default: ClassVar[bool] = False
    # keys official configs leave to transformers' class defaults
    config_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    # per-head RMS norm on q and k
    qk_norm: ClassVar[bool] = False
    # biases on q/k/v: True or False whatever the config says, None to read `attention_bias`
    qkv_bias: ClassVar[bool | None] = None
    # transformers' model class, written into configs edgekit makes (synthetic checkpoints)
    hf_class: ClassVar[str] = ""

    # ---- producers that build artifacts from this architecture (names from PRODUCERS)
    producers: ClassVar[frozenset[str]] = frozenset()

    # ---- GGUF: llama.cpp's architecture (a gguf.MODEL_ARCH member name), None when
    # edgekit's converter does not handle this family
    gguf_arch: ClassVar[str | None] = None
    # llama.cpp's graph for this family attends sliding-window layers through their window
    # (window-sized KV caches); False where llama.cpp ignores a window the config states
    gguf_slides: ClassVar[bool] = True
    # how llama.cpp's converter reads the family's tokenizer (models/gguf_vocab.gguf_vocab):
    # "bpe" (tokenizer.json's byte-level BPE), "llama" / "gemma" / "phi3" (a SentencePiece
    # tokenizer.model where the checkpoint has one, each with its converter class's rules)
    gguf_vocab: ClassVar[str] = "bpe"
    # llama.cpp's `general.architecture` values of GGUF files this family reads (edgekit
    # plan FILE.gguf); empty: gguf_arch lowercased, when there is one. Where two families
    # name one value, the first registered reads it (and its `from_gguf_metadata` may
    # hand the file to another model type, as Llama does for Mixtral)
    gguf_names: ClassVar[tuple[str, ...]] = ()
    # RoPE scaling kinds (config.json rope_type) the family writes itself, beyond the
    # linear and yarn scaling the converter writes for every family (Phi-3: longrope)
    gguf_rope_scaling: ClassVar[tuple[str, ...]] = ()
    # the HF names of per-expert weights the converter stacks into llama.cpp's ffn_*_exps
    # (a regular expression with the groups `layer` and `expert`; the name without its
    # expert index is the stacked tensor's HF name, which gguf's tensor map knows)
    hf_expert_pattern: ClassVar[str] = (
        r"^model\.layers\.(?P<layer>\d+)\.mlp\.experts\.(?P<expert>\d+)\.(?:gate|up|down)_proj\.weight$"
    )

    # ---- llm-compressor (GPTQ / AWQ / FP8 checkpoints, quantize/compressed.py)
    # modules kept in BF16 besides lm_head, as llm-compressor `re:` patterns over the
    # transformers model's module names: MoE routers and shared-expert gates, tiny layers whose
    # rounding changes which experts a token reaches. transformers 5 names every family's
    # router `mlp.gate` (Mixtral's block_sparse_moe.gate, DeepSeek's too); Qwen2-MoE adds the
    # shared expert's `shared_expert_gate`
    ct_keep_wide: ClassVar[tuple[str, ...]] = (r"re:.*mlp\.gate$", r"re:.*shared_expert_gate$")
    # the AWQ smoothing pairs: the key of llm-compressor's AWQ_MAPPING_REGISTRY whose layer
    # pattern this family follows; "" lets llm-compressor pick by the model's class (a class it
    # does not list gets dense-Llama pairs, which on a MoE would smooth the norm before the
    # experts without compensating the router)
    ct_awq_mappings: ClassVar[str] = ""

    # ---- GGUF import: edgekit's importer (models/gguf_import.py) inverts the converter for
    # a family that sets gguf_importable (its hf_tensor_names, hf_config and the converter's
    # hooks describe the checkpoint); other families' GGUF files go through transformers'
    # GGUF loader
    gguf_importable: ClassVar[bool] = False
    # GGUF tensor name -> checkpoint tensor name; `blk.{i}.` stands for block i, `{e}` for
    # expert e of a stacked tensor (each expert's own checkpoint tensor)
    hf_tensor_names: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "token_embd.weight": "model.embed_tokens.weight",
            "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight",
            **{
                f"blk.{{i}}.{g}": f"model.layers.{{i}}.{h}"
                for g, h in (
                    ("attn_norm.weight", "input_layernorm.weight"),
                    ("attn_q.weight", "self_attn.q_proj.weight"),
                    ("attn_k.weight", "self_attn.k_proj.weight"),
                    ("attn_v.weight", "self_attn.v_proj.weight"),
                    ("attn_q.bias", "self_attn.q_proj.bias"),
                    ("attn_k.bias", "self_attn.k_proj.bias"),
                    ("attn_v.bias", "self_attn.v_proj.bias"),
                    ("attn_output.weight", "self_attn.o_proj.weight"),
                    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
                    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
                    ("ffn_norm.weight", "post_attention_layernorm.weight"),
                    ("ffn_gate.weight", "mlp.gate_proj.weight"),
                    ("ffn_up.weight", "mlp.up_proj.weight"),
                    ("ffn_down.weight", "mlp.down_proj.weight"),
                    ("ffn_gate_inp.weight", "mlp.gate.weight"),
                    ("ffn_gate_exps.weight", "mlp.experts.{e}.gate_proj.weight"),
                    ("ffn_up_exps.weight", "mlp.experts.{e}.up_proj.weight"),
                    ("ffn_down_exps.weight", "mlp.experts.{e}.down_proj.weight"),
                    ("ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"),
                    ("ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"),
                    ("ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"),
                    ("ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight"),
                )
            },
        }
    )
    # 1-D F32 tensors of a GGUF file that hold config facts rather than weights (Phi-3's
    # long-RoPE factors): handed to hf_config, not written as weights
    gguf_config_tensors: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, model_types: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.producers) - set(PRODUCERS)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown producers {sorted(unknown)} (known: {PRODUCERS})")
        if "gguf" in cls.producers and not cls.gguf_arch:
            raise TypeError(f"{cls.__name__}: a family the GGUF converter supports needs gguf_arch")
        if model_types:  # a class without model types is a base for others, not registered
            cls.model_types = tuple(model_types)
            register(cls())

    @property
    def name(self) -> str:
        return self.model_types[0]

    def supports(self, producer: str) -> bool:
        """Whether `producer` (one of PRODUCERS) builds artifacts from this architecture."""
        return producer in self.producers

    def __repr__(self) -> str:
        return f"<ArchFamily {self.name}>"

    def llm_compressor_refusal(self, a: Arch, method: str) -> str:
        """Why llm-compressor cannot make a `method` ("gptq", "awq" or "fp8") checkpoint of
        this model, in one line; "" when it can (asked before anything is loaded)."""
        return ""

    # ---- config.json ----------------------------------------------------------------------

    def unwrap_text_config(self, cfg: Mapping[str, Any], text: Mapping[str, Any]) -> dict[str, Any]:
        """The language model's config of a multimodal wrapper whose model_type is this
        family's (`text` is its text_config). Wrapper-level keys the text config lacks are
        carried in."""
        inner = dict(text)
        inner.setdefault("model_type", cfg.get("model_type"))
        # PretrainedConfig's own default is a tied embedding
        inner.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", True))
        return inner

    def normalize_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The config with this family's class defaults filled in (and its model_type
        renamed where two model types mean one architecture)."""
        return {**self.config_defaults, **cfg}

    def arch_fields(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Arch fields the family reads from its (normalized) config beyond the common ones."""
        return {}

    def reads_qkv_bias(self, cfg: Mapping[str, Any]) -> bool:
        if self.qkv_bias is not None:
            return self.qkv_bias
        return bool(cfg.get("attention_bias", False))

    # ---- tensor inventory (GGUF names and order, GGUF shapes) -----------------------------

    def tensors(self, a: Arch) -> list[Tensor]:
        out: list[Tensor] = [Tensor("token_embd.weight", (a.hidden, a.vocab), "embed")]
        for i in range(a.n_layers):
            out += self.attention(a, i)
            out += self.mlp(a, i)
        out.append(Tensor("output_norm.weight", (a.hidden,), "norm"))
        if not a.tied_embeddings:
            out.append(Tensor("output.weight", (a.hidden, a.vocab), "output"))
        return out

    def attention(self, a: Arch, i: int) -> list[Tensor]:
        h = a.hidden
        q, kv = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        ts = [
            block_tensor(i, "attn_norm.weight", (h,), "norm"),
            block_tensor(i, "attn_q.weight", (h, q), "attn"),
            block_tensor(i, "attn_k.weight", (h, kv), "attn"),
            block_tensor(i, "attn_v.weight", (h, kv), "attn"),
        ]
        if a.qkv_bias:
            ts += [
                block_tensor(i, "attn_q.bias", (q,), "bias"),
                block_tensor(i, "attn_k.bias", (kv,), "bias"),
                block_tensor(i, "attn_v.bias", (kv,), "bias"),
            ]
        ts.append(block_tensor(i, "attn_output.weight", (q, h), "attn"))
        if a.qk_norm:
            ts += [
                block_tensor(i, "attn_q_norm.weight", (a.head_dim,), "norm"),
                block_tensor(i, "attn_k_norm.weight", (a.head_dim,), "norm"),
            ]
        return ts

    def mlp(self, a: Arch, i: int) -> list[Tensor]:
        norm = block_tensor(i, "ffn_norm.weight", (a.hidden,), "norm")
        return [norm, *(self.moe_mlp(a, i) if a.is_moe_layer(i) else self.dense_mlp(a, i))]

    def dense_mlp(self, a: Arch, i: int) -> list[Tensor]:
        h = a.hidden
        return [
            block_tensor(i, "ffn_gate.weight", (h, a.ffn), "ffn"),
            block_tensor(i, "ffn_up.weight", (h, a.ffn), "ffn"),
            block_tensor(i, "ffn_down.weight", (a.ffn, h), "ffn"),
        ]

    def router(self, a: Arch, i: int) -> list[Tensor]:
        return [block_tensor(i, "ffn_gate_inp.weight", (a.hidden, a.n_experts), "router")]

    def moe_mlp(self, a: Arch, i: int) -> list[Tensor]:
        h, e, f = a.hidden, a.n_experts, a.expert_ffn
        ts = self.router(a, i)
        ts += [
            block_tensor(i, "ffn_gate_exps.weight", (h, f, e), "expert"),
            block_tensor(i, "ffn_up_exps.weight", (h, f, e), "expert"),
            block_tensor(i, "ffn_down_exps.weight", (f, h, e), "expert"),
        ]
        if a.shared_expert_ffn:
            s = a.shared_expert_ffn
            ts += [
                block_tensor(i, "ffn_gate_shexp.weight", (h, s), "shared_expert"),
                block_tensor(i, "ffn_up_shexp.weight", (h, s), "shared_expert"),
                block_tensor(i, "ffn_down_shexp.weight", (s, h), "shared_expert"),
            ]
        return ts

    # ---- GGUF converter -------------------------------------------------------------------

    def gguf_unpermute_heads(self, a: Arch, gguf_name: str) -> int | None:
        """For a q/k weight whose rows the converter must reorder from HF's rotate-half
        layout to llama.cpp's interleaved RoPE pairs: the number of heads; else None."""
        return None

    def gguf_metadata(self, a: Arch) -> dict[str, int]:
        """GGUF keys (without the `{arch}.` prefix) this architecture needs beyond the
        common ones, with their uint32 values."""
        return {}

    def gguf_config_metadata(self, a: Arch, cfg: Mapping[str, Any]) -> Mapping[str, int | float | bool]:
        """GGUF keys (without the `{arch}.` prefix) read from config.json facts an `Arch` does
        not hold (Phi-3's original context, partial rotary factor, long-RoPE attention
        factor): ints are written as uint32, floats as float32, bools as bool. A key the
        converter writes for every family is replaced (DeepSeek's one KV head)."""
        return {}

    def gguf_check_config(self, a: Arch, cfg: Mapping[str, Any], checkpoint_dir: Path) -> None:
        """Raise an EdgekitError, before anything is written, for a checkpoint llama.cpp's
        graph would read otherwise than transformers does (Gemma 3's fixed layer pattern)."""

    def gguf_skips(self, a: Arch, hf_name: str) -> bool:
        """Checkpoint tensors llama.cpp's converter leaves out (DeepSeek-V3's
        multi-token-prediction layers)."""
        return False

    def gguf_values(self, a: Arch, gguf_name: str) -> Callable[[Any], Any] | None:
        """An elementwise change of a tensor's values on the way to GGUF (Gemma's norms are
        stored as weight - 1), applied to each float32 slice of rows as it is read; None
        leaves them as stored."""
        return None

    def gguf_pieces(self, a: Arch, gguf_name: str, hf_shape: tuple[int, ...]) -> list[GGUFPiece] | None:
        """The GGUF tensors written in place of the checkpoint tensor `gguf_name` (as gguf's
        tensor map names it; `hf_shape` in the checkpoint's order), or None to write it as
        stored. The pieces' names and shapes are what `tensors()` lists."""
        return None

    def gguf_extra_tensors(self, a: Arch, cfg: Mapping[str, Any]) -> dict[str, list[float]]:
        """F32 vectors llama.cpp's converter writes from config.json rather than from the
        checkpoint's weights (Phi-3's long-RoPE factors), by GGUF name."""
        return {}

    # ---- GGUF files as models -------------------------------------------------------------

    def gguf_file_archs(self) -> tuple[str, ...]:
        """The general.architecture values of GGUF files this family reads."""
        return self.gguf_names or ((self.gguf_arch.lower(),) if self.gguf_arch else ())

    def from_gguf_metadata(self, m: GGUFMetadata) -> dict[str, Any]:
        """The `Arch` fields of a GGUF file, from llama.cpp's metadata keys and the names and
        shapes of its tensor table (never its data). A family overrides it where its files
        differ (Gemma 3's fixed sliding-window pattern, DeepSeek's latent attention)."""
        hidden = m.uint("embedding_length")
        n_heads = m.uint("attention.head_count")
        ffn = m.uint("feed_forward_length", 0)
        n_experts = m.uint("expert_count", 0)
        is_moe = n_experts > 1
        expert_ffn = (m.uint("expert_feed_forward_length", 0) or ffn) if is_moe else 0
        n_shared = m.uint("expert_shared_count", 0) if is_moe else 0
        shared_ffn = (
            (m.uint("expert_shared_feed_forward_length", 0) or n_shared * expert_ffn) if is_moe else 0
        )
        first_dense = m.uint("leading_dense_block_count", 0) if is_moe else 0
        if not is_moe and not ffn:
            raise m.error("feed_forward_length", "missing (needed for a dense model)")
        max_ctx = m.uint("context_length", 0) or 4096
        sliding = m.uint("attention.sliding_window", 0)
        if sliding >= max_ctx:
            sliding = 0
        return {
            "family": self.name,
            "n_layers": m.uint("block_count"),
            "hidden": hidden,
            "ffn": ffn if (not is_moe or first_dense) else 0,
            "n_heads": n_heads,
            "n_kv_heads": m.uint("attention.head_count_kv", n_heads),
            "head_dim": m.uint("attention.key_length", 0) or hidden // n_heads,
            "vocab": m.vocab(),
            # llama.cpp reuses token_embd when the file has no output.weight
            "tied_embeddings": not m.has_tensor("output.weight"),
            "max_context": max_ctx,
            "rope_theta": m.number("rope.freq_base", 10000.0),
            "qk_norm": m.has_tensor("blk.0.attn_q_norm.weight"),
            "qkv_bias": m.has_tensor("blk.0.attn_q.bias") or m.has_tensor("blk.0.attn_qkv.bias"),
            "n_experts": n_experts if is_moe else 0,
            "experts_per_token": m.uint("expert_used_count", 0) if is_moe else 0,
            "expert_ffn": expert_ffn,
            "n_shared_experts": (n_shared or (1 if shared_ffn else 0)) if is_moe else 0,
            "shared_expert_ffn": shared_ffn,
            "first_dense_layers": first_dense,
            "sliding_window": sliding,
            "sliding_window_pattern": m.sliding_window_pattern() if sliding else 0,
        }

    # ---- GGUF import: a GGUF file back into a checkpoint (models/gguf_import.py) -----------

    def hf_config(self, a: Arch, m: GGUFMetadata, vectors: Mapping[str, list[float]]) -> dict[str, Any]:
        """config.json of the checkpoint a GGUF file of this family came from (the arguments
        of transformers' config class for `model_type`), from its `Arch` and metadata;
        `vectors` holds the file's `gguf_config_tensors`. The default is a Llama-style
        decoder with Qwen-style MoE keys; families add or rename keys."""
        cfg: dict[str, Any] = {
            "model_type": a.family,
            "architectures": [self.hf_class],
            "hidden_size": a.hidden,
            "intermediate_size": m.uint("feed_forward_length", 0) or a.ffn or a.expert_ffn,
            "num_hidden_layers": a.n_layers,
            "num_attention_heads": a.n_heads,
            "num_key_value_heads": a.n_kv_heads,
            "head_dim": a.head_dim,
            "vocab_size": a.vocab,
            "max_position_embeddings": a.max_context,
            "rms_norm_eps": f32_decimal(m.number("attention.layer_norm_rms_epsilon", 1e-6)),
            "tie_word_embeddings": a.tied_embeddings,
            "attention_bias": a.qkv_bias,
            "rope_parameters": {"rope_type": "default", "rope_theta": f32_decimal(a.rope_theta)},
        }
        kind = m.get("rope.scaling.type")
        if kind in ("linear", "yarn"):
            rp = {**cfg["rope_parameters"], "rope_type": kind}
            rp["factor"] = f32_decimal(m.number("rope.scaling.factor", 1.0))
            if kind == "yarn":
                rp["original_max_position_embeddings"] = m.uint("rope.scaling.original_context_length", 0)
            cfg["rope_parameters"] = rp
        if a.is_moe:
            cfg |= {
                "num_experts": a.n_experts,
                "num_experts_per_tok": a.experts_per_token,
                "moe_intermediate_size": a.expert_ffn,
            }
            if a.shared_expert_ffn:
                cfg["shared_expert_intermediate_size"] = a.shared_expert_ffn
        return cfg

    def hf_piece_shape(self, a: Arch, gguf_name: str) -> tuple[int, ...] | None:
        """The checkpoint shape (PyTorch order) of a tensor the converter writes as
        `gguf_pieces` (so the file lacks `gguf_name`, e.g. DeepSeek's attn_kv_b), or None."""
        return None

    def hf_tokenizer_converter(self, ggml_model: str) -> str | None:
        """The key of transformers' GGUF tokenizer converters (integrations.ggml
        GGUF_TO_FAST_CONVERTERS) that rebuilds a `tokenizer.ggml.model` vocabulary of this
        family: byte-level BPE ("gpt2") and SentencePiece ("llama"); None: not rebuilt."""
        return {"gpt2": "gpt2", "llama": "llama"}.get(ggml_model)

    # ---- llama.cpp quantization mixes -----------------------------------------------------

    def gguf_mix_is_70b(self, a: Arch) -> bool:
        """Whether llama.cpp takes this model for its 70B type (LLM_TYPE_70B), which gives
        attn_v more bits in the Q3_K / Q4_K mixes."""
        return False


class GGUFMetadata:
    """A GGUF file's metadata and tensor table as an architecture family reads them: keys
    are asked for without the `{arch}.` prefix; a missing or mistyped key raises a one-line
    ConfigError naming the file and the key. Built by `edgekit.models.gguf_arch`."""

    def __init__(
        self,
        arch: str,
        metadata: Mapping[str, Any],
        shapes: Mapping[str, tuple[int, ...]],
        source: str = "GGUF",
    ) -> None:
        self.arch, self.metadata, self.shapes, self.source = arch, metadata, shapes, source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, f"{self.arch}.{key}", problem)

    def get(self, key: str) -> Any:
        """The value of `{arch}.{key}`, or None."""
        return self.metadata.get(f"{self.arch}.{key}")

    def uint(self, key: str, default: int | None = None) -> int:
        """A non-negative integer (required when there is no default; a per-layer array
        gives its largest value)."""
        v = self.get(key)
        if v is None:
            if default is None:
                raise self.error(key, "missing")
            return default
        if isinstance(v, list) and v and all(_is_int(x) for x in v):
            v = max(v)
        if not _is_int(v) or v < 0 or (default is None and v == 0):
            raise self.error(key, f"expected a positive integer, got {v!r}")
        return int(v)

    def number(self, key: str, default: float) -> float:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"expected a number, got {v!r}")
        return float(v)

    def has_tensor(self, name: str) -> bool:
        return name in self.shapes

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def vocab(self) -> int:
        """The embedding's rows (what the weights hold), else the stated vocabulary size,
        else the tokenizer's token count."""
        embd = self.shape("token_embd.weight")
        if embd is not None and len(embd) >= 2:
            return int(embd[1])
        n = self.get("vocab_size")
        if _is_int(n) and n > 0:
            return int(n)
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if tokens is not None and len(tokens) > 0:
            return len(tokens)
        raise self.error("vocab_size", "missing (and no token_embd.weight tensor or tokenizer.ggml.tokens)")

    def sliding_window_pattern(self) -> int:
        """Every n-th layer attends globally: `attention.sliding_window_pattern` as a number,
        or as llama.cpp's per-layer booleans (true: sliding); 0 when the file does not say."""
        v = self.get("attention.sliding_window_pattern")
        if _is_int(v):
            return int(v)
        if isinstance(v, list) and v:
            n_full = sum(1 for x in v if not x)
            return len(v) // n_full if n_full else 0
        return 0


def f32_decimal(x: float) -> float:
    """The shortest decimal that is the same float32 as `x`: GGUF stores floats as float32
    (1e-5 reads back as 9.999999747e-06); a config written from a file says 1e-05."""
    import struct

    want = struct.pack("<f", x)
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack("<f", y) == want:
            return y
    return float(x)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---- the registry --------------------------------------------------------------------------

_FAMILIES: dict[str, ArchFamily] = {}


def register(family: ArchFamily) -> ArchFamily:
    """Register a family instance under each of its model types (done by the class
    argument). A later registration of a model type replaces the earlier one."""
    if not family.model_types:
        raise ValueError(f"{type(family).__name__}: no model types to register")
    for mt in family.model_types:
        _FAMILIES[mt] = family
    return family


def unregister(model_type: str) -> None:
    _FAMILIES.pop(model_type, None)


def _load_entry_points() -> None:
    import_group(ENTRY_POINT_GROUP, "architecture")


def find_arch_family(model_type_or_arch: str | Arch) -> ArchFamily | None:
    """The family of a model type (or of an Arch), or None when no family reads it."""
    key = model_type_or_arch.family if isinstance(model_type_or_arch, Arch) else model_type_or_arch
    found = _FAMILIES.get(key)
    if found is None:  # a family registered by another package (imported once)
        _load_entry_points()
        found = _FAMILIES.get(key)
    return found


def arch_family(model_type_or_arch: str | Arch) -> ArchFamily:
    """The family of a model type (or of an Arch); an EdgekitError names the known ones."""
    found = find_arch_family(model_type_or_arch)
    if found is None:
        key = model_type_or_arch.family if isinstance(model_type_or_arch, Arch) else model_type_or_arch
        raise EdgekitError(f"unsupported architecture '{key}'", f"known: {', '.join(known_model_types())}")
    return found


def find_gguf_family(gguf_name: str) -> ArchFamily | None:
    """The family that reads GGUF files of llama.cpp architecture `gguf_name` (a file's
    general.architecture), or None."""
    return next((f for f in families() if gguf_name in f.gguf_file_archs()), None)


def gguf_names_read() -> list[str]:
    """Every llama.cpp architecture some family reads GGUF files of, sorted (for messages)."""
    return sorted({n for f in families() for n in f.gguf_file_archs()})


def known_model_types() -> list[str]:
    """Every model type some family reads, sorted."""
    _load_entry_points()
    return sorted(_FAMILIES)


def families() -> list[ArchFamily]:
    """Every registered family once, in registration order."""
    _load_entry_points()
    return list(dict.fromkeys(_FAMILIES.values()))


def model_types_supported_by(producer: str) -> list[str]:
    """The model types `producer` builds artifacts from, sorted (for messages)."""
    if producer not in PRODUCERS:
        raise ValueError(f"unknown producer {producer!r} (known: {', '.join(PRODUCERS)})")
    return [mt for mt in known_model_types() if _FAMILIES[mt].supports(producer)]
