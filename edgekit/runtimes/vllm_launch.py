"""How edgekit would start vLLM for a model on a target: the layout (tensor / pipeline /
expert parallel, from edgekit.layout, the planner's own rules), the memory budget per GPU
at a `gpu_memory_utilization`, and the exact commands (vllm serve on loopback; Ray head and
workers when the target spans several nodes). Pure planning: nothing here imports vLLM, so
`--dry-run` works on any machine."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import default_overhead

GPUS_PER_NODE = 8
GPU_MEMORY_UTILIZATION = 0.90  # vLLM's default (edgekit.runtimes.vllm.Options)
RAY_PORT = 6379


@dataclass
class VllmLaunch:
    model: str
    served: str  # what `vllm serve` is given: a hub id or a local path
    format: str
    target: str
    ctx: int
    layout: dict
    nodes: int
    per_gpu: dict  # bytes: capacity, usable, weights, overhead, kv_budget; kv_tokens
    serve: list[str]
    ray: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.per_gpu["kv_tokens"] >= self.ctx

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "served": self.served,
            "format": self.format,
            "target": self.target,
            "ctx": self.ctx,
            "layout": self.layout,
            "nodes": self.nodes,
            "per_gpu": self.per_gpu,
            "fits": self.fits,
            "serve": self.serve,
            "serve_command": shlex.join(self.serve),
            "ray": self.ray,
            "notes": self.notes,
        }


def launch_plan(
    model: Any,
    target_spec: str,
    fmt_id: str = "bf16",
    ctx: int | None = None,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    served: str | None = None,
    port: int = 8000,
) -> VllmLaunch:
    from edgekit.formats import get_format
    from edgekit.models.catalogue import ModelEntry, resolve
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target

    if not 0.1 <= gpu_memory_utilization <= 0.99:
        raise EdgekitError("--gpu-memory-utilization must be between 0.1 and 0.99")
    entry: ModelEntry = model if hasattr(model, "arch") else resolve(model)  # a ModelEntry, or a name
    target = get_target(target_spec)
    if target.device.kind != "gpu":
        raise EdgekitError(
            f"vLLM serves on GPUs; {target.name} is a {target.device.kind}",
            "plan a GPU target such as h100 or 8xh100",
        )
    from edgekit.runtimes import registry

    fmt = get_format(fmt_id)
    served_formats = registry.capabilities("vllm").formats
    if not registry.serves(served_formats, fmt.id):
        raise EdgekitError(
            f"vLLM does not serve {fmt.id} here; choose one of its formats ({', '.join(served_formats)})"
        )
    ctx = ctx or min(entry.arch.max_context, 32768)
    row = plan(entry, target, ctx=ctx, formats=[fmt]).rows[0]
    lay = row.layout
    budget = row.per_device
    # vLLM takes gpu_memory_utilization of each GPU; of that, the runtime's own memory (CUDA
    # context, compute buffers) is not KV cache
    usable = int(gpu_memory_utilization * budget.capacity)
    non_kv = default_overhead(entry.arch, target.device, 1)
    kv_budget = usable - budget.weights - non_kv
    kv_per_token = row.kv_bytes / ctx * (budget.kv_cache / row.kv_bytes if row.kv_bytes else 0)
    kv_tokens = int(kv_budget // kv_per_token) if kv_per_token > 0 and kv_budget > 0 else 0
    arch = entry.arch
    notes = list(lay.notes)
    expert_parallel = arch.is_moe and lay.devices > 1
    if expert_parallel and lay.ep == 1:
        notes.append(
            "MoE on several GPUs: expert parallel keeps experts whole (one set per GPU) instead of "
            "slicing each"
        )
    if served:
        ref = served
    elif _is_reference(fmt):
        ref = entry.hub_id or model
    else:  # where `edgekit quantize MODEL --format FMT` puts the checkpoint
        from edgekit.artifact import safe_stem

        ref = f"artifacts/{safe_stem(entry.name)}-{fmt.id.replace(':', '-')}"
    tp, pp = lay.tp, lay.pp
    nodes = math.ceil(target.count / GPUS_PER_NODE)
    if nodes > 1 and tp > GPUS_PER_NODE:
        # tensor parallel across nodes would send every layer's all-reduce over the network
        tp, pp = GPUS_PER_NODE, target.count // GPUS_PER_NODE
        notes.append(
            f"TP {lay.tp} would span nodes: TP {tp} inside each node, {pp} pipeline stages across them"
        )
    argv = [
        "vllm",
        "serve",
        ref,
        "--tensor-parallel-size",
        str(tp),
        "--pipeline-parallel-size",
        str(pp),
        "--max-model-len",
        str(ctx),
        "--gpu-memory-utilization",
        f"{gpu_memory_utilization:.2f}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if expert_parallel:
        argv.append("--enable-expert-parallel")
    ray: list[str] = []
    if nodes > 1:
        argv += ["--distributed-executor-backend", "ray"]
        ray = [f"ray start --head --port={RAY_PORT} --num-gpus={GPUS_PER_NODE}   # on the head node"] + [
            f"ray start --address=<head-ip>:{RAY_PORT} --num-gpus={GPUS_PER_NODE}   # on worker node {i}"
            for i in range(1, nodes)
        ]
        notes.append(
            f"{target.count} GPUs = {nodes} nodes of {GPUS_PER_NODE}: start Ray on every node, then "
            "`vllm serve` on the head node (RAY_ADDRESS=<head-ip>:6379 for an existing cluster)"
        )
    if kv_budget <= 0:
        notes.append("the weights alone exceed the usable memory per GPU: more GPUs or a smaller format")
    elif kv_tokens < ctx:
        notes.append(
            f"the KV cache holds {kv_tokens:,} tokens per replica: less than one {ctx:,}-token sequence"
        )
    per_gpu = {
        "capacity": budget.capacity,
        "usable": usable,
        "weights": budget.weights,
        "non_kv_overhead": non_kv,
        "kv_budget": max(kv_budget, 0),
        "kv_tokens": kv_tokens,
        "concurrent_full_sequences": kv_tokens // ctx if ctx else 0,
    }
    layout = {**lay.to_dict(), "tp": tp, "pp": pp, "ep": min(lay.ep, tp) if lay.ep > 1 else 1}
    return VllmLaunch(entry.name, ref, fmt.id, target.name, ctx, layout, nodes, per_gpu, argv, ray, notes)


def _is_reference(fmt) -> bool:
    """The unquantized checkpoint (edgekit.formats' Format.is_reference where it exists)."""
    flag = getattr(fmt, "is_reference", None)
    return bool(flag) if flag is not None else fmt.bits == 16  # of vLLM's formats, only bf16 has 16 bits
