"""What llama.cpp, transformers and onnxruntime take on the CPU beyond weights and KV cache:
the planner's overhead term there (each runtime's ``memory_overhead`` on a CPU device).

The planner's CPU peak is what ``edgekit bench`` measures, the peak resident set (VmHWM) of
one fresh process that imports the runtime, loads the model and prefills a prompt of
``prompt`` tokens into a context of ``ctx``: weights + KV cache (the planner's own terms) +
this overhead, which is

    process   the interpreter, edgekit and the runtime's libraries, the session itself:
              measured once on the tiny Qwen3 test model (vocabulary 640, 2 layers), whose
              weights, cache and activations are a few MiB, minus those
    vocab     the tokenizer's tables, bytes per vocabulary entry: measured as the difference
              between the default model's (49,152 entries) and the tiny model's tokenizer alone
    prefill   the buffers the prompt's forward pass touches, from the shapes: attention
              scores heads x prompt x keys, the layer's activations, the logits the runtime
              computes (each term below)

Every constant was measured on one machine (x86-64, glibc, Python 3.11; llama-cpp-python
0.3.36, torch 2.13 CPU / transformers 5.17, onnxruntime 1.32), so it is an estimate elsewhere;
the figures and the check are in docs/plan.md and tests/test_plan_vs_measured.py.
Pure arithmetic: the planner imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.device import Device

MIB = 1024**2
PROMPT = 512  # the prompt the planner assumes when it is not told one (edgekit bench's default)
UBATCH = 512  # llama.cpp's n_ubatch as edgekit's llama.cpp runtime asks for it
KV_PAD = 256  # llama.cpp pads the cells it attends over to a multiple of this

# the fixed cost of one process, measured with the tiny Qwen3 (bench defaults: prompt 512,
# 128 generated, 2 threads): its peak RSS minus its weights, KV cache and modelled terms
LLAMACPP_PROCESS = int(56.9 * MIB)  # Python + edgekit + libllama (42.6 MiB before load) + context
TRANSFORMERS_PROCESS = int(374.1 * MIB)  # Python + torch + transformers (245 MiB imported) + model code
ONNXRUNTIME_PROCESS = int(76.0 * MIB)  # Python + onnxruntime (54 MiB imported) + session

# tokenizer tables per vocabulary entry (vocabulary + BPE merges), measured as
# (default model - tiny model) / (49,152 - 640 entries)
LLAMACPP_PER_VOCAB = 330  # llama_vocab's maps, the piece cache, gguf's strings during load
TRANSFORMERS_PER_VOCAB = 1191  # AutoTokenizer (tokenizers' tables + transformers' Python side)
ONNXRUNTIME_PER_VOCAB = 629  # tokenizers.Tokenizer alone

# llama.cpp (flash attention off): the f32 score matrix of one ubatch against the cells in
# use, plus its f16 copy in ggml's work buffer for the product with the f16 V cache
LLAMACPP_SCORE_COPIES = 1.5
# onnxruntime: the exported graph's attention is unfused (scores, scaled, masked, softmaxed:
# a new tensor each) and the BFC arena grows by powers of two; the touched arena per byte of
# one layer's activations (scores + MLP + hidden states, float32), fitted on the tiny model
# at prompts of 512 and 1536 tokens
ONNXRUNTIME_ARENA = 4.87


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _prompt(ctx: int | None, prompt: int | None) -> tuple[int, int]:
    """(context, prompt) the estimate is for: the prompt at most the context."""
    p = prompt or PROMPT
    c = ctx or p
    return c, max(1, min(p, c))


def _ffn(arch: Arch) -> int:
    return max(arch.ffn, arch.expert_ffn * arch.experts_per_token + arch.shared_expert_ffn)


def llamacpp_cpu(arch: Arch, batch: int = 1, ctx: int | None = None, prompt: int | None = None) -> int:
    """llama.cpp on the CPU (weights memory-mapped, counted by the planner as the tensor
    bytes): process + 330 B x vocab + the touched compute buffer of the prompt's last ubatch
    (1.5 x 4 B x heads x keys x ubatch tokens for the scores, 4 B x ubatch x (hidden + MLP
    width) for the activations) + the output buffer (4 B x vocab per sequence). llama.cpp
    reserves its compute buffer for the worst case (every position's logits), but only the
    pages a graph writes are resident."""
    c, p = _prompt(ctx, prompt)
    ub = min(p, UBATCH, c)
    keys = min(_pad(p, KV_PAD), _pad(c, KV_PAD))
    heads = arch.n_heads
    scores = LLAMACPP_SCORE_COPIES * 4 * heads * keys * ub
    acts = 4 * ub * (arch.hidden + _ffn(arch))
    output = 4 * arch.vocab * batch
    return int(LLAMACPP_PROCESS + LLAMACPP_PER_VOCAB * arch.vocab + scores + acts + output)


def transformers_cpu(
    arch: Arch, batch: int = 1, ctx: int | None = None, prompt: int | None = None, dtype: str | None = None
) -> int:
    """transformers on the CPU in `dtype` (bfloat16 unless told: what edgekit runs for speed;
    a BF16 checkpoint is memory-mapped, not copied): process + 1191 B x vocab + the prefill's
    logits for every prompt position (batch x prompt x vocab x element size) + one layer's
    attention scores (batch x heads x prompt^2 x element size). float32 adds the upcast
    copy of every parameter (2 B each beyond the BF16 bytes the planner counts)."""
    _, p = _prompt(ctx, prompt)
    size = 4 if dtype == "float32" else 2
    logits = batch * p * arch.vocab * size
    scores = batch * arch.n_heads * p * p * size
    upcast = 0
    if dtype == "float32":
        upcast = 2 * arch.param_counts()[0]
    return int(TRANSFORMERS_PROCESS + TRANSFORMERS_PER_VOCAB * arch.vocab + logits + scores + upcast)


def onnxruntime_cpu(
    arch: Arch, batch: int = 1, ctx: int | None = None, prompt: int | None = None, kv_bytes: int = 0
) -> int:
    """onnxruntime on the CPU (fp32 initializers copied into the session): process + 629 B x
    vocab + a second KV cache (`kv_bytes`: each step's past and present are both alive) +
    4.87 x one layer's float32 prefill activations (batch x prompt x (heads x prompt + 3 x MLP
    width + 4 x hidden) x 4 B; the export computes only the last position's logits)."""
    _, p = _prompt(ctx, prompt)
    layer = 4 * batch * p * (arch.n_heads * p + 3 * _ffn(arch) + 4 * arch.hidden)
    return int(
        ONNXRUNTIME_PROCESS + ONNXRUNTIME_PER_VOCAB * arch.vocab + kv_bytes + ONNXRUNTIME_ARENA * layer
    )


def llamacpp_overhead(
    arch: Arch,
    device: Device,
    batch: int = 1,
    options: object = None,
    ctx: int | None = None,
    prompt: int | None = None,
) -> int:
    """llama.cpp's `memory_overhead` (edgekit.runtimes.llamacpp): `llamacpp_cpu` on the CPU,
    the default estimate on a GPU."""
    if device.kind != "cpu":
        from edgekit.runtimes.base import default_overhead

        return default_overhead(arch, device, batch, options)
    return llamacpp_cpu(arch, batch, ctx, prompt)
