"""The memory and speed planner: what fits on a target, before anything is downloaded.

Pure arithmetic over the tensor inventory (edgekit.models), the format size model
(edgekit.formats) and the device data (edgekit.profiles). For every format the target
runs: weights, KV cache at the requested context, runtime overhead, per device when
sharded, whether it fits and by how much, the largest context that fits, a decode
roofline and a compute-bound prefill estimate. Every formula is named in `METHOD`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgekit import __version__
from edgekit.formats import Format, Support, default_formats, support
from edgekit.layout import Layout, choose_layout
from edgekit.models.arch import Arch
from edgekit.models.catalogue import ModelEntry
from edgekit.profiles.target import Target
from edgekit.runtimes import registry
from edgekit.runtimes.base import KV_TYPES, Capabilities

METHOD = {
    "weights": "sum over every tensor of its stored bytes under the format's per-tensor types "
    "(GGUF: llama.cpp's mix rules and block sizes; GPTQ/AWQ/FP8: quantized linears + BF16 embeddings, "
    "lm_head, norms, routers)",
    "kv_cache": "what the row's runtime allocates (its kv_cache_bytes). llama.cpp: per sequence, "
    "the context padded to 256 cells; layers its graph attends through a sliding window (Gemma 2/3, "
    "Llama 4; not Phi-3 or Mistral) a second cache of window + ubatch (min(context, 512)) cells padded "
    "to 256, at most the context (the whole context with -o swa_full); K and V rows of kv_heads x "
    "head_dim (MLA: one K row of kv_lora_rank + rope dims, no V) in the type's ggml block sizes. "
    "Others: 2 x layers x kv_heads x head_dim x bytes per element x context x sequences "
    "(MLA: (kv_lora_rank + rope dim) per layer; sliding-window layers keep only their window)",
    "overhead": "GPU, estimate: CUDA context 0.5 GiB per GPU + compute buffer 512 x 4 B x "
    "(vocab + 6 x hidden + 2 x MLP width); vLLM also leaves 10 % of memory unused "
    "(gpu_memory_utilization 0.90). CPU (llama.cpp, transformers, onnxruntime), measured: "
    "the peak RSS of one process that loads the model and prefills --prompt-tokens (at most "
    "the context) = weights + KV + a fixed process cost (interpreter + runtime libraries, "
    "measured on a tiny Qwen3) + tokenizer bytes x vocab + the prefill's buffers (llama.cpp: "
    "1.5 x 4 B x heads x cells x ubatch scores + activations; transformers: the logits of "
    "every prompt position and one layer's scores in bfloat16; onnxruntime: a second fp32 "
    "KV cache + 4.87 x one layer's fp32 activations); within 10 % of edgekit bench's peak RSS "
    "for SmolLM2-135M and a tiny Qwen3 (edgekit.runtimes.cpu_memory, docs/plan.md)",
    "decode_roofline": "tok/s <= batch x bandwidth / bytes read per step; bytes = weights touched "
    "(routed experts pro rata, input embedding excluded) + KV cache at the context, per device, "
    "in parallel under tensor parallelism, one device after another under llama.cpp's layer split",
    "prefill": "compute roof: peak dense FLOPS of the matmul dtype / (2 x active matmul params + "
    "4 x layers x heads x head_dim x prompt/2) per token; an upper bound",
}


@dataclass(frozen=True)
class DeviceBudget:
    weights: int
    kv_cache: int
    overhead: int
    capacity: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def headroom(self) -> int:
        return self.capacity - self.total

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "headroom": self.headroom}


@dataclass(frozen=True)
class PlanRow:
    format: str
    family: str
    runtime: str
    support: Support
    weights_bytes: int
    bits_per_weight: float
    kv_type: str
    kv_bytes: int
    layout: Layout
    per_device: DeviceBudget
    host_bytes: int  # weights a GPU runtime keeps in host RAM (llama.cpp's token embedding)
    fits: bool
    max_context: int  # 0 when not even one token fits
    decode_tok_s: float
    bytes_per_token: float
    prefill_tok_s: float
    notes: tuple[str, ...] = ()

    @property
    def miss_bytes(self) -> int:
        return max(0, -self.per_device.headroom)

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "family": self.family,
            "runtime": self.runtime,
            "support": asdict(self.support),
            "weights_bytes": self.weights_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "kv_type": self.kv_type,
            "kv_bytes": self.kv_bytes,
            "layout": self.layout.to_dict(),
            "per_device": self.per_device.to_dict(),
            "host_bytes": self.host_bytes,
            "fits": self.fits,
            "miss_bytes": self.miss_bytes,
            "max_context": self.max_context,
            "decode_tok_s": round(self.decode_tok_s, 2),
            "bytes_per_token": round(self.bytes_per_token),
            "prefill_tok_s": round(self.prefill_tok_s, 1),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Plan:
    model: ModelEntry
    target: Target
    ctx: int
    batch: int
    kv_type: str
    prompt_tokens: int
    rows: list[PlanRow]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fitting(self) -> list[PlanRow]:
        return [r for r in self.rows if r.fits]

    def to_dict(self) -> dict:
        total, active = self.model.arch.param_counts()
        return {
            "edgekit_version": __version__,
            "model": {
                "name": self.model.name,
                "hub_id": self.model.hub_id,
                "source": self.model.source,
                "params_total": total,
                "params_active": active,
                "context": self.model.context,
            },
            "target": self.target.to_dict(),
            "ctx": self.ctx,
            "batch": self.batch,
            "kv_type": self.kv_type,
            "prompt_tokens": self.prompt_tokens,
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
            "method": METHOD,
        }


def plan(
    model: ModelEntry,
    target: Target,
    ctx: int | None = None,
    batch: int = 1,
    kv_type: str = "f16",
    formats: list[Format] | None = None,
    prompt_tokens: int = 512,
    include_slow: bool = True,
) -> Plan:
    from edgekit.errors import EdgekitError

    arch = model.arch
    ctx = min(arch.max_context, 8192) if ctx is None else ctx
    if ctx < 1 or batch < 1 or prompt_tokens < 1:
        raise EdgekitError("--ctx, --batch and --prompt-tokens must be positive")
    if kv_type not in KV_TYPES:
        raise EdgekitError(f"unknown KV cache type '{kv_type}'", f"choose one of {', '.join(KV_TYPES)}")
    notes = []
    if ctx > arch.max_context:
        notes.append(f"--ctx {ctx} is beyond the model's {arch.max_context}-token context")
    rows = []
    caps: dict[str, Capabilities] = {}  # what each runtime declares (edgekit.runtimes.base)
    for fmt in formats or default_formats():
        sup = support(fmt, target.device)
        if sup.level == "no" or (sup.level == "slow" and not include_slow):
            continue
        runtime = fmt.runtime_for(target.device.kind)
        if runtime not in caps:
            caps[runtime] = registry.capabilities(runtime)
        rows.append(_row(arch, fmt, sup, target, ctx, batch, kv_type, prompt_tokens, runtime, caps[runtime]))
    rows.sort(key=lambda r: (r.weights_bytes, r.format))
    return Plan(model, target, ctx, batch, kv_type, prompt_tokens, rows, tuple(notes))


def _row(
    arch: Arch,
    fmt: Format,
    sup: Support,
    target: Target,
    ctx: int,
    batch: int,
    kv_req: str,
    prompt: int,
    runtime: str,
    caps: Capabilities,
) -> PlanRow:
    dev = target.device
    notes: list[str] = []
    kv_type = caps.kv_type_for(kv_req)
    if kv_type != kv_req:
        notes.append(f"{runtime} has no {kv_req} KV cache: planned with {kv_type}")
    layout = choose_layout(arch, target.count, fp8_block=_fp8_block(fmt), layer_split=caps.layer_split)
    plan_t = fmt.tensor_plan(arch)
    weights = sum(t.nbytes for t in plan_t)
    n_elems = sum(math.prod(t.shape) for t in plan_t)

    w_dev, host = _weights_per_device(arch, plan_t, layout, caps.host_embedding and dev.kind == "gpu")

    def kv(c: int) -> int:
        return caps.kv_bytes(arch, c, kv_type, batch)

    def budget(c: int) -> tuple[DeviceBudget, int]:
        kv_dev = int(kv(c) * _kv_share(arch, layout))
        over = caps.overhead(arch, dev, batch, ctx=c, prompt=min(prompt, c))
        return DeviceBudget(w_dev, kv_dev, over, dev.memory_bytes), host

    b, host = budget(ctx)
    fits = b.headroom >= 0
    max_ctx = _max_context(arch, budget)
    if max_ctx >= arch.max_context:
        notes.append(f"the model's own {arch.max_context}-token limit is reached before memory runs out")
    if sup.level == "slow":
        notes.append(sup.reason)
    kv_bytes = kv(ctx)
    read, decode = _decode_roofline(arch, plan_t, layout, dev, kv_bytes, batch)
    prefill = _prefill(arch, fmt, dev, target.count, prompt)
    return PlanRow(
        format=fmt.id,
        family=fmt.family,
        runtime=runtime,
        support=sup,
        weights_bytes=weights,
        bits_per_weight=8 * weights / n_elems,
        kv_type=kv_type,
        kv_bytes=kv_bytes,
        layout=layout,
        per_device=b,
        host_bytes=host,
        fits=fits,
        max_context=max_ctx,
        decode_tok_s=decode,
        bytes_per_token=read,
        prefill_tok_s=prefill,
        notes=tuple(list(layout.notes) + notes),
    )


def _weights_per_device(arch: Arch, plan_t, layout: Layout, host_embedding: bool) -> tuple[int, int]:
    """Bytes of weights on the busiest device, and bytes kept in host RAM instead."""
    host = 0
    if host_embedding:
        # the runtime keeps the input embedding on the host (it only gathers rows); a tied
        # model also loads the matrix onto the GPU as its output projection
        host = sum(t.nbytes for t in plan_t if t.role == "embed")
        on_gpu = sum(t.nbytes for t in plan_t if t.role != "embed" or arch.tied_embeddings)
        if layout.pp == 1:
            return on_gpu, host
        layer = sum(t.nbytes for t in plan_t if t.name.startswith("blk."))
        tail = on_gpu - layer  # output (and its norm) sit on the last device
        return -(-layer // layout.pp) + tail, host
    if layout.devices == 1:
        return sum(t.nbytes for t in plan_t), host
    per = 0.0
    for t in plan_t:
        if t.role in ("norm", "router", "bias"):
            per += t.nbytes / layout.pp  # replicated across TP ranks
        elif not arch.uses_mla and (".attn_k." in t.name or ".attn_v." in t.name):
            per += t.nbytes / layout.pp * max(1 / layout.tp, 1 / arch.n_kv_heads)
        else:
            per += t.nbytes / layout.devices
    return int(per), host


def _kv_share(arch: Arch, layout: Layout) -> float:
    if layout.strategy == "layer-split":
        return 1 / layout.pp
    if arch.uses_mla:
        return 1 / layout.pp  # the latent cache has no heads to split: every TP rank holds it
    return max(1 / layout.tp, 1 / arch.n_kv_heads) / layout.pp


def _fp8_block(fmt: Format) -> bool:
    """FP8 weights with block scales (the FP8 block-128 divisibility rule applies)."""
    return fmt.compute == "fp8" and fmt.group > 0


def _max_context(arch: Arch, budget) -> int:
    if budget(1)[0].headroom < 0:
        return 0
    lo, hi = 1, arch.max_context
    if budget(hi)[0].headroom >= 0:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if budget(mid)[0].headroom >= 0:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _decode_roofline(arch: Arch, plan_t, layout: Layout, dev, kv: int, batch: int):
    """(bytes read per decode step across all devices, tokens/s upper bound); `kv` is the
    KV cache's bytes at the planned context."""
    touched = 1.0
    if arch.is_moe:
        # expected share of experts a batch of B tokens touches: 1 - (1 - k/n)^B
        touched = 1 - (1 - arch.experts_per_token / arch.n_experts) ** batch
    w = 0.0
    for t in plan_t:
        if t.role == "embed" and not arch.tied_embeddings:
            continue
        w += t.nbytes * (touched if t.role == "expert" else 1.0)
    step_bytes = w + kv
    if layout.strategy == "layer-split":
        seconds = step_bytes / dev.bandwidth_bytes_s  # devices take turns
    else:
        seconds = step_bytes / (dev.bandwidth_bytes_s * layout.devices)
    return step_bytes / batch, batch / seconds


def _prefill(arch: Arch, fmt: Format, dev, count: int, prompt: int) -> float:
    _, active = arch.param_counts()
    matmul = active - arch.hidden * arch.vocab * (0 if arch.tied_embeddings else 1)
    attn = 4 * arch.n_layers * arch.n_heads * (arch.v_head_dim or arch.head_dim) * prompt / 2
    flops_per_token = 2 * matmul + attn
    dtype = fmt.compute if dev.kind == "gpu" else "fp32"
    if dtype == "fp8" and (dev.compute_capability or (0, 0)) < (8, 9):
        dtype = "fp16"
    return dev.peak_flops(dtype) * count / flops_per_token
