"""GPTQ, AWQ and FP8 checkpoints through llm-compressor, saved as compressed-tensors.

Why llm-compressor for all three: it is the maintained successor of both AutoGPTQ's and
AutoAWQ's algorithms, installs beside the CPU torch and transformers 5 that the rest of
edgekit uses, quantizes dense and MoE models on a CPU, and writes compressed-tensors, the
format vLLM loads natively and transformers loads on a CPU. (GPTQModel writes the classic
GPTQ/AWQ layouts but pins numpy 2.2.6 and, from 7.7, a CUDA torch; see the README.)

The three family modules (gptq.py, awq.py, fp8.py) say which llm-compressor modifier and
scheme a format means; this module does everything they share: the architecture family's
say (its refusal, asked before anything is loaded; the modules it keeps in BF16; its AWQ
smoothing pairs), calibration data, the MoE expert-coverage count, the run, an atomic save
(MoE experts under the checkpoint's own per-expert names), and the manifest.

MoE experts: transformers 5 fuses each layer's experts into 3-D parameters (gate_up_proj,
down_proj), which no Linear-targeting recipe sees. llm-compressor replaces them by one
Linear per expert and projection (`linearize_moe`, 2-D weights copied exactly) and, with
moe_calibrate_all_experts, sends every calibration token through every expert, so each
expert is calibrated on all tokens whatever the router picks. On save, the names are those
the checkpoint itself used per expert, read from transformers' own weight conversions for
the model (Mixtral: `block_sparse_moe.experts.{e}.w1|w3|w2`, the layout vLLM loads).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import (
    Artifact,
    Manifest,
    artifact_sha256,
    artifact_size,
    build_lock,
    current_artifact,
    describe_source,
    publish,
    safe_stem,
    tool_versions,
)
from edgekit.errors import EdgekitError, MissingDependency
from edgekit.models.arch import Arch, ArchFamily, arch_family
from edgekit.progress import Progress
from edgekit.quantize import validate
from edgekit.quantize.gguf import check_checkpoint as gguf_check_checkpoint
from edgekit.text import default_calibration_text, read_text_file

# the HF model types the llm-compressor path is tested on (dense and MoE) are those whose
# architecture family (edgekit/models/arch/) declares the "llm-compressor" producer.
# Modules that stay unquantized whatever the scheme: the output head, and what the family
# keeps wide (ArchFamily.ct_keep_wide: MoE routers, shared-expert gates); q_norm / k_norm and
# every other norm are not Linear layers, so no scheme touches them
ALWAYS_IGNORE = ("lm_head",)
METHODS = ("gptq", "awq", "fp8")  # the recipe modules' METHOD: what a family may refuse
SEQ_LEN = 512
MAX_SAMPLES = 64
TOOLS = ("llmcompressor", "compressed-tensors", "transformers", "torch")


@dataclass(frozen=True)
class Calibration:
    name: str  # what the manifest records: "edgekit:calibration.txt" or the file's name
    samples: list[list[int]]  # token windows
    sha256: str

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.samples)


def refusal(a: Arch, method: str) -> str:
    """Why llm-compressor cannot make a `method` (one of METHODS) checkpoint of `a`, as one
    line that names what works instead; "" when it can. Asks the architecture family only:
    nothing is imported or loaded."""
    fam = arch_family(a)
    why = fam.llm_compressor_refusal(a, method)
    if not why:
        return ""
    others = [m for m in METHODS if m != method and not fam.llm_compressor_refusal(a, m)]
    works = [_EXAMPLE_FORMAT[m] for m in others] + (["gguf:Q4_K_M"] if fam.supports("gguf") else [])
    hint = (
        f"{' and '.join(works)} work{'s' if len(works) == 1 else ''}"
        if works
        else "no other format edgekit makes works either"
    )
    return f"{method}: {why}; {hint}"


def check_family(a: Arch, method: str) -> None:
    """Raise the family's one-line refusal of `method`, before anything is loaded."""
    why = refusal(a, method)
    if why:
        raise EdgekitError(why)


def ignore_list(fam: ArchFamily) -> list[str]:
    """The modules llm-compressor leaves in BF16: lm_head and the family's wide modules."""
    return [*ALWAYS_IGNORE, *fam.ct_keep_wide]


def awq_mappings(fam: ArchFamily) -> list | None:
    """The family's AWQ smoothing pairs from llm-compressor's registry (None: llm-compressor
    picks by the model's class)."""
    if not fam.ct_awq_mappings:
        return None
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

    try:
        return list(AWQ_MAPPING_REGISTRY[fam.ct_awq_mappings])
    except KeyError:
        raise EdgekitError(
            f"{fam.name}: llm-compressor has no AWQ mapping set '{fam.ct_awq_mappings}'",
            "gptq:w4g128 and fp8:dynamic need none",
        ) from None


_EXAMPLE_FORMAT = {"gptq": "gptq:w4g128", "awq": "awq:w4g128", "fp8": "fp8:dynamic"}


def require_llmcompressor() -> None:
    import importlib.util

    for mod, what in (
        ("llmcompressor", "llm-compressor"),
        ("compressed_tensors", "compressed-tensors"),
        ("torch", "torch"),
        ("transformers", "transformers"),
    ):
        if importlib.util.find_spec(mod) is None:
            raise MissingDependency(what, "quant", "it makes the GPTQ, AWQ and FP8 checkpoints")


def calibration_windows(
    checkpoint, calibration: str | None, seq_len: int = SEQ_LEN, max_samples: int = MAX_SAMPLES
) -> Calibration:
    from transformers import AutoTokenizer

    try:
        text = read_text_file(calibration, "calibration text") if calibration else default_calibration_text()
    except EdgekitError as e:
        raise EdgekitError(
            e.message, "GPTQ and AWQ need calibration text; fp8:dynamic and fp8:block128 are data-free"
        ) from None
    tok = AutoTokenizer.from_pretrained(str(checkpoint.path))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 16:
        raise EdgekitError(
            f"calibration text has only {len(ids)} tokens; give at least a few paragraphs",
            "or use fp8:dynamic, which needs none",
        )
    windows = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    if len(windows) > 1 and len(windows[-1]) < seq_len // 4:
        windows.pop()  # a stub tail adds little and costs a full forward pass
    name = Path(calibration).name if calibration else "edgekit:calibration.txt"
    return Calibration(name, windows[:max_samples], hashlib.sha256(text.encode()).hexdigest())


def expert_coverage(model, samples: list[list[int]]) -> dict | None:
    """Tokens each expert of each MoE layer is routed by the unquantized model, and the
    experts that received none. llm-compressor also sends every calibration token through
    every expert (so none is left uncalibrated), which is exactly why the real routing has to
    be counted separately."""
    import torch

    routers = [(n, m) for n, m in model.named_modules() if n.endswith("mlp.gate") and hasattr(m, "top_k")]
    if not routers:
        return None
    counts: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in routers:
        n_exp = int(getattr(mod, "num_experts", 0) or mod.weight.shape[0])
        counts[name] = torch.zeros(n_exp, dtype=torch.long)

        def hook(module, args, out, name=name):
            idx = out[2] if isinstance(out, tuple) and len(out) >= 3 else None
            if idx is None:  # an older router returns logits only: take its top-k
                logits = out[0] if isinstance(out, tuple) else out
                idx = torch.topk(logits, module.top_k, dim=-1).indices
            counts[name] += torch.bincount(idx.reshape(-1).cpu(), minlength=len(counts[name]))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for s in samples:
                model(torch.tensor([s], device=model.device))
    finally:
        for h in handles:
            h.remove()
    layers = {name.removesuffix(".mlp.gate"): c.tolist() for name, c in counts.items()}
    unseen = {layer: [i for i, c in enumerate(cs) if c == 0] for layer, cs in layers.items()}
    return {
        "layers": len(layers),
        "experts_per_layer": max(len(c) for c in layers.values()),
        "tokens_per_expert": layers,
        "unseen_experts": {k: v for k, v in unseen.items() if v},
        "note": "tokens routed by the unquantized model over the calibration samples; "
        "every expert is still calibrated on all calibration tokens (moe_calibrate_all_experts)",
    }


_FUSED_EXPERTS = {
    "gate_up_proj": ("gate_proj", "up_proj"),
    "down_proj": ("down_proj",),
    "up_proj": ("up_proj",),
}
_PER_EXPERT_SOURCE = re.compile(r"^(?P<base>.*experts)\.\*\.(?P<proj>\w+)\.weight$")


def per_expert_layout(model) -> dict[str, str] | None:
    """Give a MoE whose experts transformers fused (3-D gate_up_proj / down_proj) one Linear
    per expert and projection, named `experts.{e}.gate_proj|up_proj|down_proj` while
    llm-compressor runs, and make save_pretrained write each expert under the name the
    checkpoint gave it: the model's own weight conversions (what transformers applied on
    load) say which per-expert tensors it merged into each fused one, in order, and every
    renaming beside them (Mixtral's block_sparse_moe -> mlp) is undone on save as well.
    Returns {linear name: checkpoint name} per projection, None for a model without fused
    experts."""
    from llmcompressor.modeling.moe.conversion_mappings import set_save_conversion_mapping
    from llmcompressor.modeling.moe.linearize import get_non_linearized_moes, linearize_moe
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    if not get_non_linearized_moes(model):
        return None
    keep: list = []
    names: dict[str, str] = {}
    for conv in getattr(model, "_weight_conversions", None) or []:
        targets = list(conv.target_patterns)
        fused = targets[0].rsplit(".", 1)[-1] if len(targets) == 1 else ""
        if (
            isinstance(conv, WeightConverter)
            and targets[0].endswith(f"experts.{fused}")
            and fused in _FUSED_EXPERTS
        ):
            for src, proj in zip(conv.source_patterns, _FUSED_EXPERTS[fused], strict=False):
                if m := _PER_EXPERT_SOURCE.match(src):
                    names[proj] = m.group("proj")
        elif isinstance(conv, WeightRenaming):
            keep.append(conv)
        # other converters act on weights the linearized model no longer holds fused
    linearize_moe(model)
    renames = [
        WeightRenaming(source_patterns=rf"\.experts\.(\d+)\.{ck}\.", target_patterns=rf".experts.\1.{proj}.")
        for proj, ck in names.items()
        if ck != proj
    ]
    set_save_conversion_mapping(model, keep + renames)
    return names or {p: p for p in ("gate_proj", "up_proj", "down_proj")}


@contextlib.contextmanager
def cpu_only_fixes() -> Iterator[bool]:
    """llm-compressor's AWQ pins cached activations in page-locked memory for faster copies
    to an accelerator; without one, torch refuses (`Cannot access accelerator device`).
    Pinning is only a transfer optimisation, so on a machine without CUDA it is skipped
    for the duration of the run and restored afterwards."""
    import torch

    if torch.cuda.is_available():
        yield False
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    # patching a method on the class for the duration of the run is the point here
    IntermediatesCache.pin_memory = lambda self, *a, **k: None  # type: ignore[method-assign]
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


def build(
    checkpoint,
    fmt,
    recipe_module,
    out_dir: Path,
    calibration: str | None = None,
    samples: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Artifact:
    """Quantize `checkpoint` to `fmt` into a directory under out_dir. `recipe_module` (gptq,
    awq or fp8 in this package) says which llm-compressor modifier and scheme `fmt` means; the
    format family has checked the architecture and the shapes."""
    progress = progress or Progress()
    mod = recipe_module
    if mod.NEEDS_CALIBRATION is False and calibration:
        raise EdgekitError(f"{fmt.id} is data-free: it takes no calibration text")
    check_family(checkpoint.entry.arch, mod.METHOD)
    # the checkpoint against its architecture (headers only), before anything is loaded or written
    gguf_check_checkpoint(checkpoint.path, checkpoint.entry.arch, checkpoint.safetensors_files())
    fam = arch_family(checkpoint.entry.arch)
    ignore = ignore_list(fam)
    require_llmcompressor()
    recipe_extra = {"mappings": awq_mappings(fam)} if mod.METHOD == "awq" else {}
    out_dir = Path(out_dir)
    dest = out_dir / f"{safe_stem(checkpoint.entry.name)}-{fmt.id.replace(':', '-')}"
    wanted = {
        "calibration": calibration or ("edgekit:calibration.txt" if mod.NEEDS_CALIBRATION else None),
        "max_samples": samples or MAX_SAMPLES,
    }
    # one process builds, a second one on the same output waits here and then reuses it;
    # the manifest is written first and the directory renamed into place last (publish)
    with build_lock(dest):
        existing = current_artifact(dest, fmt.id, checkpoint.revision, wanted)
        if existing and not force:
            progress.say(f"up to date: {dest}")
            return existing

        from edgekit._quiet import quiet_tqdm, quiet_transformers

        quiet_transformers()
        quiet_tqdm()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        calib = (
            calibration_windows(checkpoint, calibration, max_samples=samples or MAX_SAMPLES)
            if mod.NEEDS_CALIBRATION
            else None
        )
        progress.say(f"loading {checkpoint.entry.name} (BF16)")
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint.path), dtype=torch.bfloat16)
        validate.check_finite_model(model)
        tok = AutoTokenizer.from_pretrained(str(checkpoint.path))
        coverage = expert_coverage(model, calib.samples) if calib and checkpoint.entry.arch.is_moe else None
        if coverage and coverage["unseen_experts"]:
            n = sum(len(v) for v in coverage["unseen_experts"].values())
            progress.say(f"{n} experts received no routed calibration tokens (listed in the manifest)")
        expert_names = per_expert_layout(model)
        with _quiet_loguru():
            modifier = mod.modifier(fmt, ignore=ignore, **recipe_extra)
        modifier_name = "+".join(
            type(m).__name__ for m in (modifier if isinstance(modifier, list) else [modifier])
        )
        progress.say(f"quantizing to {fmt.id} with llm-compressor ({modifier_name})")
        t0 = time.perf_counter()
        _oneshot(model, modifier, calib)
        seconds = time.perf_counter() - t0

        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=out_dir))
        try:
            model.save_pretrained(tmp, save_compressed=True)
            tok.save_pretrained(tmp)
            _copy_license(checkpoint.path, tmp)
            files = sorted(p for p in tmp.iterdir() if p.is_file())
            if not any(p.suffix == ".safetensors" for p in files):
                raise EdgekitError(f"llm-compressor wrote no safetensors for {fmt.id}")
            qcfg = json.loads((tmp / "config.json").read_text()).get("quantization_config", {})
            manifest = Manifest(
                format=fmt.id,
                file=dest.name,
                layout="compressed-tensors",
                size_bytes=artifact_size(tmp),
                sha256=artifact_sha256(tmp),
                files={p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()},
                bits_per_weight=round(fmt.bits_per_weight(checkpoint.entry.arch), 4),
                source=describe_source(checkpoint),
                recipe={
                    "producer": "llm-compressor",
                    "modifier": modifier_name,
                    "scheme": mod.scheme(fmt),
                    "ignore": ignore,
                    "awq_mappings": (fam.ct_awq_mappings or "by model class")
                    if mod.METHOD == "awq"
                    else None,
                    "expert_names_on_save": expert_names,
                    "calibration": calib.name if calib else None,
                    "calibration_sha256": calib.sha256 if calib else None,
                    "calibration_samples": len(calib.samples) if calib else 0,
                    "max_samples": samples or MAX_SAMPLES,
                    "calibration_tokens": calib.tokens if calib else 0,
                    "moe_calibrate_all_experts": bool(checkpoint.entry.arch.is_moe),
                    "expert_coverage": coverage,
                    "quantization_config": qcfg,
                    "cpu_only_fixes": ["IntermediatesCache.pin_memory skipped (no accelerator)"]
                    if getattr(mod, "PINS_MEMORY", False) and not torch.cuda.is_available()
                    else [],
                },
                tool_versions=tool_versions(*TOOLS),
                details={"quantize_seconds": round(seconds, 2)},
            )
            return publish(tmp, dest, manifest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _oneshot(model, modifier, calib: Calibration | None) -> None:
    import logging

    from llmcompressor import oneshot

    kwargs = {}
    if calib is not None:
        from datasets import Dataset

        ds = Dataset.from_dict(
            {"input_ids": calib.samples, "attention_mask": [[1] * len(s) for s in calib.samples]}
        )
        kwargs = dict(
            dataset=ds,
            num_calibration_samples=len(calib.samples),
            max_seq_length=SEQ_LEN,
            shuffle_calibration_samples=False,
        )
    with cpu_only_fixes(), _quiet_loguru():
        logging.getLogger("llmcompressor").setLevel(logging.WARNING)
        oneshot(model=model, recipe=modifier, moe_calibrate_all_experts=True, **kwargs)


@contextlib.contextmanager
def _quiet_loguru():
    """llm-compressor logs every module through loguru; keep errors only."""
    try:
        from loguru import logger
    except ImportError:
        yield
        return
    import sys

    logger.remove()
    sink = logger.add(sys.stderr, level="ERROR")  # llm-compressor logs per-module METRIC lines above WARNING
    try:
        yield
    finally:
        # llm-compressor reconfigures loguru when it is first imported, dropping our sink
        with contextlib.suppress(ValueError):
            logger.remove(sink)


def _copy_license(src: Path, dst: Path) -> None:
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE", "README.md"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
