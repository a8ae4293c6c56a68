"""How a model is split across the devices of a target.

A runtime either splits layers across devices (it declares `layer_split`, e.g. llama.cpp's
--split-mode layer) or uses tensor parallelism (vLLM), with expert parallelism for MoE where
slicing experts is impossible.
The rules come from the engines: tensor-parallel size must divide the attention heads;
beyond the KV-head count KV heads are replicated; FP8 block-128 checkpoints cannot be
sliced so that a weight slice is not a multiple of 128 rows (vLLM #25292, QwenLM/Qwen3 #1485).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.models.arch import Arch

FP8_BLOCK = 128


@dataclass(frozen=True)
class Layout:
    strategy: str  # single | tensor-parallel | tensor+expert-parallel | tensor+pipeline | layer-split
    tp: int = 1
    pp: int = 1
    ep: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices(self) -> int:
        return self.tp * self.pp

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "tp": self.tp,
            "pp": self.pp,
            "ep": self.ep,
            "notes": list(self.notes),
        }


def tp_ok(arch: Arch, tp: int) -> bool:
    """vLLM's head rules: TP divides the query heads, and the KV heads divide or are divided."""
    if arch.n_heads % tp:
        return False
    if arch.uses_mla:
        return True
    kv = arch.n_kv_heads
    return kv % tp == 0 or tp % kv == 0


def fp8_block_problem(arch: Arch, tp: int, experts_sliced: bool) -> str | None:
    """Why an FP8 block-128 checkpoint cannot run at this TP size, or None."""
    if tp == 1:
        return None
    if arch.is_moe and experts_sliced and (arch.expert_ffn // tp) % FP8_BLOCK:
        return (
            f"TP {tp} would slice each expert to {arch.expert_ffn}/{tp} = {arch.expert_ffn // tp} rows, "
            f"not a multiple of the FP8 block ({FP8_BLOCK})"
        )
    if arch.ffn and (arch.ffn % tp or (arch.ffn // tp) % FP8_BLOCK):
        return (
            f"TP {tp} would slice the MLP to {arch.ffn}/{tp} rows, "
            f"not a multiple of the FP8 block ({FP8_BLOCK})"
        )
    return None


def choose_layout(
    arch: Arch, n_devices: int, fp8_block: bool = False, layer_split: str | None = None
) -> Layout:
    """The layout on `n_devices`: a layer split when the runtime splits by layers
    (`layer_split` says how it is spelled: "llama.cpp --split-mode layer"), else the largest
    tensor-parallel size the head rules (and the FP8 block rule) allow, pipeline stages for the rest."""
    if n_devices == 1:
        return Layout("single")
    if layer_split:
        return Layout(
            "layer-split",
            pp=n_devices,
            notes=(
                f"{layer_split}: about {arch.n_layers / n_devices:.0f} layers per device; "
                "a single sequence runs through the devices one after another",
            ),
        )
    notes: list[str] = []
    # largest TP that obeys the head rules; the rest of the devices become pipeline stages
    tp = max(t for t in _divisors(n_devices) if tp_ok(arch, t))
    if tp < n_devices:
        notes.append(
            f"{arch.n_heads} query / {arch.n_kv_heads} KV heads allow TP {tp} at most on {n_devices} devices"
        )
    if not arch.uses_mla and tp > arch.n_kv_heads:
        notes.append(
            f"TP {tp} > {arch.n_kv_heads} KV heads: each KV head is replicated {tp // arch.n_kv_heads}x"
        )
    ep = 1
    if fp8_block:
        problem = fp8_block_problem(arch, tp, experts_sliced=True)
        if problem and arch.is_moe and arch.n_experts % tp == 0 and not fp8_block_problem(arch, tp, False):
            ep = tp
            notes.append(problem + ": expert parallel instead (--enable-expert-parallel), experts stay whole")
        elif problem:
            smaller = [t for t in _divisors(tp) if tp_ok(arch, t) and not fp8_block_problem(arch, t, True)]
            new_tp = max(smaller) if smaller else 1
            notes.append(problem + f": TP {new_tp} instead")
            tp = new_tp
    pp = n_devices // tp
    if pp > 1:
        strategy = "tensor+pipeline"
    elif ep > 1:
        strategy = "tensor+expert-parallel"
    else:
        strategy = "tensor-parallel"
    return Layout(strategy, tp=tp, pp=pp, ep=ep, notes=tuple(notes))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
