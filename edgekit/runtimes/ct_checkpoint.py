"""compressed-tensors checkpoints, read with compressed-tensors' own dequantizer: a fallback
loader for layouts transformers cannot decompress itself, and the check that a loaded model
holds exactly the checkpoint's weights (a loader that silently leaves MoE experts random is
the worst failure a quantization tool can have)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from edgekit.errors import EdgekitError

_EXPERT = re.compile(r"^(?P<base>.*\.experts)\.(?P<e>\d+)\.(?P<proj>gate|up|down)_proj$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
# relative error allowed between the loaded weight and the checkpoint's dequantized weight:
# both come from the same integers and scales, so only the final dtype's rounding differs
_TOLERANCE = 1e-2


def dequantized_tensors(path: Path, dtype, tensors: dict | None = None) -> dict:
    """Every tensor of the checkpoint, quantized ones replaced by `<module>.weight` in dtype
    (`tensors`: the checkpoint's raw tensors when the caller has already read them)."""
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    tensors = dict(tensors) if tensors is not None else raw_tensors(path)  # the dequantizer pops from it
    quantized = {k.removesuffix(".weight_scale") for k in tensors if k.endswith(".weight_scale")}
    # the dequantizer treats every `.weight` as a candidate for float formats: name the
    # modules that were never quantized (embeddings, norms, routers, lm_head) explicitly
    plain = [
        k.removesuffix(".weight")
        for k in tensors
        if k.endswith(".weight") and k.removesuffix(".weight") not in quantized
    ]
    deq = CompressedTensorsDequantizer(str(path), ignore=plain, dtype=dtype)
    return deq.process(tensors)


def raw_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    tensors: dict = {}
    for f in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def load_dequantized(path: Path, dtype, device: str):
    """Build an unquantized checkpoint from the compressed one in a temporary directory and
    load that; transformers then maps per-expert tensors onto its fused layout itself."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    tensors = dequantized_tensors(path, dtype)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("quantization_config", None)
    with tempfile.TemporaryDirectory(prefix="edgekit-deq-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(Path(tmp) / "model.safetensors"),
            metadata={"format": "pt"},
        )
        del tensors
        return AutoModelForCausalLM.from_pretrained(
            tmp, dtype=dtype, device_map=device, output_loading_info=True
        )


def sample_modules(names: list[str]) -> list[str]:
    """Quantized modules to check: everything in the first and the last layer, experts
    thinned to the first, a middle and the last one."""
    layers = sorted({int(m.group(1)) for n in names if (m := _LAYER.search(n + "."))})
    keep_layers = {layers[0], layers[-1]} if layers else set()
    out = []
    for n in names:
        m = _LAYER.search(n + ".")
        if m and int(m.group(1)) not in keep_layers:
            continue
        if e := _EXPERT.match(n):
            experts = sorted(
                {
                    int(x.group("e"))
                    for y in names
                    if (x := _EXPERT.match(y)) and x.group("base") == e.group("base")
                }
            )
            if int(e.group("e")) not in (experts[0], experts[len(experts) // 2], experts[-1]):
                continue
        out.append(n)
    return out


def verify_against_checkpoint(model, path: Path) -> dict:
    """Compare the loaded model's weights with the checkpoint's own dequantized weights for a
    sample of quantized modules; raises when they differ (e.g. experts left random)."""
    import torch

    raw = raw_tensors(path)
    ref = dequantized_tensors(path, torch.float32, raw)
    quantized = {k.removesuffix(".weight_scale") for k in raw if k.endswith(".weight_scale")}
    params = dict(model.named_parameters())
    checked, worst = 0, 0.0
    for mod in sample_modules(sorted(quantized)):
        if (
            f"{mod}.weight_packed" in params
            or params.get(f"{mod}.weight", torch.empty(0)).dtype
            == raw.get(f"{mod}.weight", torch.empty(0, dtype=torch.bool)).dtype
        ):
            # still compressed in the model (decompressed lazily at the first forward): same bytes
            names = [n for n in (f"{mod}.weight_packed", f"{mod}.weight", f"{mod}.weight_scale") if n in raw]
            if not all(n in params and torch.equal(params[n].detach().cpu(), raw[n]) for n in names):
                raise EdgekitError(
                    f"{path}: the loaded quantized tensors of {mod} differ from the checkpoint's; "
                    "refusing to measure a broken model"
                )
            checked += 1
            continue
        want = ref[f"{mod}.weight"]
        got = _model_weight(params, mod, want.shape)
        if got is None:
            got = _converted_weight(model, params, mod, want.shape)
        if got is None:
            raise EdgekitError(f"{path}: cannot find {mod} in the loaded model to check it")
        err = float((got.float().cpu() - want).norm() / want.norm().clamp_min(1e-12))
        worst = max(worst, err)
        checked += 1
        if err > _TOLERANCE:
            raise EdgekitError(
                f"{path}: loaded weights of {mod} differ from the checkpoint (relative error "
                f"{err:.3g}); the loader mis-mapped them — refusing to measure a broken model"
            )
    return {"checked_modules": checked, "max_relative_error": worst}


def _model_weight(params: dict, module: str, shape):
    if f"{module}.weight" in params:
        return params[f"{module}.weight"].detach()
    m = _EXPERT.match(module)
    if not m:
        return None
    e, proj, base = int(m.group("e")), m.group("proj"), m.group("base")
    if proj == "down" and f"{base}.down_proj" in params:
        return params[f"{base}.down_proj"].detach()[e]
    fused = params.get(f"{base}.gate_up_proj")
    if fused is None:
        return None
    rows = shape[0]  # gate rows first, then up rows (transformers 5's fused layout)
    w = fused.detach()[e]
    return w[:rows] if proj == "gate" else w[rows : 2 * rows]


def _converted_weight(model, params: dict, module: str, shape):
    """The loaded weight of a checkpoint module named as the checkpoint names it, found
    through the model's own weight conversions (what transformers applied on load, with the
    compressed-tensors suffixes when it decompressed them): its renamings, and the per-expert
    tensors it merged into a fused one (Mixtral's block_sparse_moe.experts.{e}.w1 / w3 ->
    mlp.experts.gate_up_proj[e], in that order)."""
    from transformers.core_model_loading import WeightConverter

    convs = getattr(model, "_weight_conversions", None) or []
    for suffix in ("weight", "weight_packed"):
        key = f"{module}.{suffix}"
        for conv in convs:
            renamed, source = conv.rename_source_key(key)
            if source is None:
                continue
            if isinstance(conv, WeightConverter):
                fused, expert = params.get(renamed), re.search(r"\.(\d+)\.[^.]+\.[^.]+$", key)
                if fused is None or expert is None or fused.dim() != 3:
                    return None
                parts = [p for p in conv.source_patterns if p.rstrip("$").rsplit(".", 1)[-1] == suffix]
                part = parts.index(source)
                w = fused.detach()[int(expert.group(1))]
                return w[part * shape[0] : (part + 1) * shape[0]]
            key = renamed
        if suffix == "weight" and key in params:
            return params[key].detach()
    return None
