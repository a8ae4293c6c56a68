"""Export a Hugging Face checkpoint to ONNX with an explicit KV cache, and quantize it.

Why this path (README, "onnxruntime"): optimum-onnx pins transformers < 4.58 and cannot
share an environment with llm-compressor (transformers >= 5.15); onnxruntime-genai's model
builder has no Qwen3-MoE, depends on the CPU `onnxruntime` package (which must never sit
beside `onnxruntime-gpu`) and fuses attention into its own contrib ops. torch's own exporter
(`torch.onnx.export(dynamo=True)`, i.e. torch.export + onnxscript) needs nothing but `onnx`
and `onnxscript`, which pin neither torch nor transformers, and it refuses data-dependent
control flow instead of baking one trace into the graph (a traced MoE router would be
silently wrong). The model is exported as transformers runs it (eager attention, its own
masks and rotary embedding, `DynamicCache`), so its logits equal torch's to float32
rounding; every fp32 export is checked against torch before it is kept.

The graph (names as optimum's, so its exports load too):

    inputs   input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64,
             position_ids [batch, seq] int64, logits_index [n] int64 (which positions get
             logits: all of them for scoring, the last one for generation),
             past_key_values.{i}.key / .value [batch, kv_heads, past, head_dim] float32
    outputs  logits [batch, n, vocab] float32, present.{i}.key / .value [batch, kv_heads, past+seq, head_dim]

Formats: `onnx:fp32` (the checkpoint's weights in float32), `onnx:int8` (int8 weights,
symmetric, one scale per block of 32 inputs) and `onnx:int4` (int4 weights, asymmetric,
blocks of 32), both onnxruntime's `MatMulNBits`, with the activations quantized to int8 per
block at run time on the CPU (`accuracy_level` 4). Not onnxruntime's `quantize_dynamic`: its
per-tensor activation scale is ruined by the massive activations of real LLMs (measured KL
0.58 on SmolLM2-135M against 0.0045). Embeddings, norms and a tied output head stay float32.
MoE models are exported in fp32 only (their experts are batched products no quantizer takes).

Run as `python -m edgekit.quantize.onnx_export CHECKPOINT OUT [--precision P]`: the
onnxruntime runtime exports in a child process so torch never enters the measured process.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from edgekit.errors import EdgekitError, MissingDependency, first_line

PRECISIONS = ("fp32", "int8", "int4")
FORMAT_IDS = {p: f"onnx:{p}" for p in PRECISIONS}
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
INFO_FILE = "edgekit-onnx.json"  # what the runtime needs to know beyond the graph
TOOLS = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu")
# the tested architectures are those whose family (edgekit/models/arch/) declares the "onnx"
# producer; others are exported too but must pass the same check against torch
QUANT = {"int8": (8, True), "int4": (4, False)}  # bits, symmetric
QUANT_BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations per block on the CPU (see _run_quantizer)
CHECK_TOKENS = 12
# the export is refused when torch and onnxruntime disagree by more than this (relative to
# the largest logit): float32 rounding differences are ~1e-6 of it
CHECK_REL_TOL = 1e-3
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
_LICENSE_GLOBS = ("LICENSE*", "NOTICE*", "README.md")


def default_name(model_name: str, precision: str) -> str:
    """The directory name the main job uses for an export: `<model>-onnx-<precision>`."""
    from edgekit.artifact import safe_stem

    return f"{safe_stem(model_name)}-onnx-{precision}"


def is_onnx_dir(path: Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def export(
    source,
    out_dir,
    precision: str = "fp32",
    force: bool = False,
    say=None,
    bits_per_weight: float | None = None,
):
    """Write `out_dir` (the artifact directory itself): model.onnx (+ model.onnx.data),
    config.json, the tokenizer files and edgekit-onnx.json; the manifest
    `<out_dir>.manifest.json` beside it. `source` is a checkpoint directory (or an
    `edgekit.models.source.Checkpoint`), or an `onnx:fp32` directory to quantize.
    Written to a temporary directory and renamed into place; returns the `Artifact`."""
    from edgekit.artifact import (
        Manifest,
        artifact_sha256,
        artifact_size,
        build_lock,
        current_artifact,
        publish,
        tool_versions,
    )

    if precision not in PRECISIONS:
        raise EdgekitError(f"unknown ONNX precision '{precision}'", f"one of: {', '.join(PRECISIONS)}")
    say = say or (lambda msg: None)
    out_dir = Path(out_dir).expanduser()
    src_path = Path(getattr(source, "path", source)).expanduser()
    if not src_path.is_dir():
        raise EdgekitError(
            f"{src_path}: not a directory (expected a Hugging Face checkpoint or an ONNX export)"
        )
    if src_path.resolve() == out_dir.resolve():
        raise EdgekitError(f"{out_dir}: the output directory is the source itself")
    from_onnx = is_onnx_dir(src_path)
    if from_onnx:
        info = read_info(src_path)
        if info.get("precision") != "fp32":
            raise EdgekitError(
                f"{src_path}: only an onnx:fp32 export can be quantized (this one is "
                f"{info.get('precision') or 'unknown'})"
            )
        moe = info.get("moe", False)
        src_manifest = _source_manifest(src_path)
        source_info = src_manifest.get("source") or {"path": str(src_path)}
    else:
        source_info = _checkpoint_info(source, src_path)
        moe = _config_is_moe(src_path)
    if moe and precision != "fp32":
        raise EdgekitError(
            f"onnx:{precision} is not offered for a mixture-of-experts model: the exported experts "
            "are batched matrix products that onnxruntime's quantizers leave in float32, so most "
            "of the weights would stay unquantized",
            "use onnx:fp32, or a GGUF / GPTQ format",
        )
    # one process builds, a second one on the same output waits here and then reuses it;
    # the manifest is written first and the directory renamed into place last (publish)
    with build_lock(out_dir):
        existing = current_artifact(out_dir, FORMAT_IDS[precision], source_info.get("revision"), {})
        if existing and not force:
            say(f"up to date: {out_dir}")
            return existing

        require_export_tools(need_torch=not from_onnx)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
        recipe: dict = {"precision": precision}
        t0 = time.perf_counter()
        try:
            if from_onnx:
                fp32_dir = src_path
                recipe["exporter"] = read_info(src_path).get("exporter")
            else:
                fp32_dir = tmp if precision == "fp32" else tmp / ".fp32"
                fp32_dir.mkdir(exist_ok=True)
                say(f"exporting {src_path.name} to ONNX (torch.onnx, fp32)")
                recipe.update(_export_fp32(src_path, fp32_dir))
            info = read_info(fp32_dir)
            if precision != "fp32":
                say(f"quantizing the ONNX graph to {precision}")
                recipe.update(_quantize(fp32_dir, tmp, precision))
                _copy_side_files(fp32_dir, tmp)
                if fp32_dir != src_path:
                    shutil.rmtree(fp32_dir)
            recipe["seconds"] = round(time.perf_counter() - t0, 2)
            info.update(precision=precision, format=FORMAT_IDS[precision])
            _write_json(tmp / INFO_FILE, info)
            for p in tmp.iterdir():
                if p.is_file():
                    _fsync(p)
            manifest = Manifest(
                format=FORMAT_IDS[precision],
                file=out_dir.name,
                layout="onnx",
                size_bytes=artifact_size(tmp),
                sha256=artifact_sha256(tmp),
                files={p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()},
                bits_per_weight=None if bits_per_weight is None else round(bits_per_weight, 4),
                source=source_info,
                recipe=recipe,
                tool_versions=tool_versions(*TOOLS),
            )
            return publish(tmp, out_dir, manifest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


# ---- the fp32 export ------------------------------------------------------------------------


def _export_fp32(ckpt: Path, out: Path) -> dict:
    import torch

    from edgekit._quiet import quiet_tqdm, quiet_transformers

    quiet_transformers()
    quiet_tqdm()
    model, cfg = _load_torch_model(ckpt)
    text_cfg = cfg.get_text_config()
    n_layers = int(text_cfg.num_hidden_layers)
    kv_heads = int(getattr(text_cfg, "num_key_value_heads", None) or text_cfg.num_attention_heads)
    head_dim = int(
        getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
    )
    vocab = int(text_cfg.vocab_size)
    wrapper = _Wrapper(model, n_layers)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    input_names = ["input_ids", "attention_mask", "position_ids", "logits_index", *past_names]
    output_names = ["logits", *present_names]
    # example sizes > 1 and all different, so torch.export specializes none of them
    b, s, p = 2, 5, 3
    g = torch.Generator().manual_seed(0)
    example = (
        torch.randint(0, vocab, (b, s), generator=g),
        torch.ones(b, p + s, dtype=torch.int64),
        torch.arange(p, p + s).expand(b, s).contiguous(),
        torch.arange(s - 2, s, dtype=torch.int64),
        [torch.randn(b, kv_heads, p, head_dim, generator=g) for _ in past_names],
    )
    dynamic = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"},
        "logits_index": {0: "n"},
        "past": [{0: "batch", 2: "past"} for _ in past_names],
    }
    t0 = time.perf_counter()
    with torch.no_grad(), _quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapper,
                example,
                dynamic_shapes=dynamic,
                input_names=input_names,
                output_names=output_names,
                dynamo=True,
                optimize=True,
                verbose=False,
                external_data=True,
            )
        except Exception as e:  # torch.export's errors are long; the first line names the problem
            raise EdgekitError(f"{ckpt}: torch.onnx.export failed ({first_line(e)})") from None
        assert program is not None  # dynamo=True always returns an ONNXProgram
        program.save(str(out / MODEL_FILE), external_data=True)
    export_s = time.perf_counter() - t0
    check = _check_against_torch(model, out, vocab)
    _copy_checkpoint_files(ckpt, out)
    eos = _eos_ids(ckpt, cfg)
    info = {
        "model_type": text_cfg.model_type,
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "layers": n_layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": int(getattr(text_cfg, "max_position_embeddings", 0) or 0),
        "moe": _is_moe(text_cfg),
        "eos_token_ids": eos,
        "inputs": input_names,
        "outputs": output_names,
        "precision": "fp32",
        "exporter": f"torch.onnx (dynamo) {torch.__version__}",
        "opset": _opset(out / MODEL_FILE),
    }
    _write_json(out / INFO_FILE, info)
    del model
    return {
        "exporter": info["exporter"],
        "opset": info["opset"],
        "attention": "eager",
        "experts": getattr(cfg, "_experts_implementation", None) if _is_moe(text_cfg) else None,
        "export_s": round(export_s, 2),
        "check": check,
    }


def _wrapper_class():
    import torch

    class Wrapper(torch.nn.Module):
        """input_ids, mask, positions, which positions get logits, and the flat past k/v in;
        logits and the flat present k/v out, through transformers' own DynamicCache."""

        def __init__(self, model, n_layers: int):
            super().__init__()
            self.model = model
            self.n_layers = n_layers

        def forward(self, input_ids, attention_mask, position_ids, logits_index, past):
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache(config=self.model.config)
            for i in range(self.n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=logits_index,
            )
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return Wrapper


def _Wrapper(model, n_layers):  # noqa: N802 - a class built lazily (torch is imported late)
    return _wrapper_class()(model, n_layers)


def _config_is_moe(ckpt: Path) -> bool:
    try:
        raw = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError):
        return False
    raw = raw.get("text_config", raw)
    return bool(raw.get("num_experts") or raw.get("num_local_experts") or raw.get("n_routed_experts"))


def _is_moe(text_cfg) -> bool:
    return bool(getattr(text_cfg, "num_experts", None) or getattr(text_cfg, "num_local_experts", None))


def _load_torch_model(ckpt: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

    if not (ckpt / "config.json").is_file():
        raise EdgekitError(f"{ckpt}: no config.json (expected a Hugging Face model directory)")
    raw = json.loads((ckpt / "config.json").read_text())
    if raw.get("quantization_config"):
        method = (raw["quantization_config"] or {}).get("quant_method", "?")
        raise EdgekitError(
            f"{ckpt}: a quantized checkpoint ({method}); the ONNX export takes the unquantized one",
            "the int8 and int4 ONNX formats are quantized from it by onnxruntime",
        )
    if not any(ckpt.glob("*.safetensors")):
        raise EdgekitError(f"{ckpt}: no *.safetensors weights")
    from edgekit.models.catalogue import from_local
    from edgekit.models.source import safetensors_files
    from edgekit.quantize import validate
    from edgekit.quantize.gguf import check_checkpoint as gguf_check_checkpoint

    # the checkpoint against its architecture (headers only), before torch loads it; a config
    # edgekit does not read as an architecture is left to transformers' own loading errors
    try:
        arch = from_local(ckpt).arch
    except EdgekitError:
        arch = None
    if arch is not None:
        gguf_check_checkpoint(ckpt, arch, safetensors_files(ckpt))
    try:
        AutoConfig.from_pretrained(str(ckpt))  # a clear error for a config transformers cannot read
    except (ValueError, KeyError, OSError) as e:
        raise EdgekitError(f"{ckpt}: transformers cannot read its config ({first_line(e)})") from None
    try:
        # output_loading_info=True returns (model, loading info), which transformers' hints omit
        model, info = cast(
            "tuple[PreTrainedModel, dict[str, Any]]",
            AutoModelForCausalLM.from_pretrained(
                str(ckpt),
                dtype=torch.float32,
                attn_implementation="eager",
                output_loading_info=True,
                use_safetensors=True,
                trust_remote_code=False,
            ),
        )
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise EdgekitError(f"{ckpt}: transformers cannot load it ({first_line(e)})") from None
    from edgekit.runtimes.transformers import _check_load_info

    _check_load_info(ckpt, info)
    validate.check_finite_model(model)
    if _is_moe(model.config.get_text_config()):
        # the default expert loop picks experts with data-dependent shapes, which torch.export
        # refuses; "batched_mm" gathers the chosen experts' weights per token: same numbers
        model.config._experts_implementation = "batched_mm"
    model.eval()
    return model, model.config


def _check_against_torch(model, out: Path, vocab: int) -> dict:
    """Run the exported graph on a short sequence, in one piece and as prefill + one decode
    step, and compare with torch; refuse an export that disagrees."""
    import numpy as np
    import onnxruntime as ort
    import torch

    n = CHECK_TOKENS
    toks = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(toks, use_cache=False).logits[0].float().numpy()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(out / MODEL_FILE), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]

    def run(ids, start, past):
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, start + ids.shape[1]), np.int64),
            "position_ids": np.arange(start, start + ids.shape[1], dtype=np.int64)[None],
            "logits_index": np.arange(ids.shape[1], dtype=np.int64),
        }
        for i, p in enumerate(pasts):
            feeds[p.name] = past[i]
        return sess.run(None, {k: v for k, v in feeds.items() if k in names})

    empty = [np.zeros((1, int(p.shape[1]), 0, int(p.shape[3])), np.float32) for p in pasts]
    full = run(toks.numpy(), 0, empty)[0][0]
    pre = run(toks[:, : n - 1].numpy(), 0, empty)
    step = run(toks[:, n - 1 :].numpy(), n - 1, pre[1:])[0][0]
    inc = np.concatenate([pre[0][0], step])
    scale = float(np.abs(ref).max()) or 1.0
    diff = float(max(np.abs(full - ref).max(), np.abs(inc - ref).max()))
    top1 = float((full.argmax(-1) == ref.argmax(-1)).mean())
    if not diff <= CHECK_REL_TOL * scale:
        raise EdgekitError(
            f"the ONNX export disagrees with torch (max |logit difference| {diff:.3g} against logits "
            f"up to {scale:.3g}); refusing to keep it"
        )
    return {"tokens": n, "max_abs_diff": diff, "max_abs_logit": scale, "same_top1": top1}


# ---- quantization ---------------------------------------------------------------------------


def _quantize(fp32_dir: Path, out: Path, precision: str) -> dict:
    import logging

    src = fp32_dir / MODEL_FILE
    dst = out / MODEL_FILE
    t0 = time.perf_counter()
    # the quantizer logs every node at INFO, and advice on the root logger
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        recipe = _run_quantizer(src, dst, precision)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    recipe["quantize_s"] = round(time.perf_counter() - t0, 2)
    _normalise_external_data(out)
    counts = _op_counts(dst)
    recipe["quantized_nodes"] = {k: v for k, v in counts.items() if k == "MatMulNBits"}
    if not recipe["quantized_nodes"]:
        raise EdgekitError(f"onnxruntime quantized no MatMul of {src} to {precision}")
    return recipe


def _run_quantizer(src: Path, dst: Path, precision: str) -> dict:
    """Both formats are onnxruntime's weight-only `MatMulNBits` (round to nearest, blocks of
    32 inputs) with `accuracy_level` 4: the CPU kernel quantizes the activations to int8 per
    block as it runs, which is fast and, being per block, survives the massive activations
    that ruin per-tensor dynamic int8 (`quantize_dynamic`: KL 0.58 on SmolLM2 against 0.0045
    here). CUDA ignores the accuracy level and computes in floating point."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    bits, symmetric = QUANT[precision]
    model = onnx.load(str(src), load_external_data=True)
    q = MatMulNBitsQuantizer(
        model, bits=bits, block_size=QUANT_BLOCK, is_symmetric=symmetric, accuracy_level=ACCURACY_LEVEL
    )
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=True)
    return {
        "quantizer": "onnxruntime MatMulNBitsQuantizer (round to nearest)",
        "bits": bits,
        "block_size": QUANT_BLOCK,
        "symmetric": symmetric,
        "accuracy_level": ACCURACY_LEVEL,
        "ops": ["MatMul"],
    }


def _normalise_external_data(out: Path) -> None:
    """onnxruntime names the external data file after the model (or not at all for a small
    model); keep whatever it wrote but make sure every reference resolves inside `out`."""
    import onnx

    model = onnx.load(str(out / MODEL_FILE), load_external_data=False)
    for t in onnx.external_data_helper._get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            if not (out / loc).is_file() or Path(loc).name != loc:
                raise EdgekitError(
                    f"the quantized model refers to external data outside its directory ({loc})"
                )


def _op_counts(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


# ---- files ----------------------------------------------------------------------------------


def _copy_checkpoint_files(ckpt: Path, out: Path) -> None:
    shutil.copy2(ckpt / "config.json", out / "config.json")
    for name in _TOKENIZER_FILES:
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, out / name)
    for pattern in _LICENSE_GLOBS:
        for f in ckpt.glob(pattern):
            if f.is_file():
                shutil.copy2(f, out / f.name)
    if not (out / "tokenizer.json").is_file():
        raise EdgekitError(f"{ckpt}: no tokenizer.json (the onnxruntime runtime needs a fast tokenizer)")


def _copy_side_files(src: Path, out: Path) -> None:
    """Everything of an fp32 export except the graph and its weights."""
    for f in src.iterdir():
        if f.is_file() and f.name not in (MODEL_FILE, DATA_FILE, INFO_FILE) and not (out / f.name).exists():
            shutil.copy2(f, out / f.name)


def _eos_ids(ckpt: Path, cfg) -> list[int]:
    ids = []
    for f in ("generation_config.json", "config.json"):
        try:
            v = json.loads((ckpt / f).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        if v is not None:
            ids += v if isinstance(v, list) else [v]
    return sorted({int(i) for i in ids})


def read_info(d: Path) -> dict:
    try:
        return json.loads((d / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _source_manifest(d: Path) -> dict:
    from edgekit.artifact import manifest_path

    try:
        return json.loads(manifest_path(d).read_text())
    except (OSError, ValueError):
        return {}


def _checkpoint_info(source, path: Path) -> dict:
    if hasattr(source, "to_dict") and hasattr(source, "revision"):
        info = source.to_dict()
        entry = getattr(source, "entry", None)
        if entry is not None:
            info["hub_id"] = entry.hub_id
            info["license"] = entry.license.to_dict()
        return info
    from edgekit.models.source import fingerprint

    if not (path / "config.json").is_file():
        raise EdgekitError(
            f"{path}: no config.json and no model.onnx (expected a Hugging Face checkpoint or an ONNX export)"
        )
    return {"path": str(path), "name": path.name, "revision": fingerprint(path), "origin": "local"}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _fsync(path: Path) -> None:
    import os

    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def require_export_tools(need_torch: bool) -> None:
    import importlib.util

    mods = ["onnx", "onnxruntime"] + (["torch", "transformers", "onnxscript"] if need_torch else [])
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(", ".join(missing), "onnx", "needed to export to ONNX")


class _quiet_exporter:  # noqa: N801 - used as a context manager
    """torch.onnx prints its progress and torch.export warns on stdout/stderr; keep them out
    of edgekit's output (errors still raise)."""

    def __enter__(self):
        import contextlib
        import io
        import logging
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        self._buf = io.StringIO()
        self._stack.enter_context(contextlib.redirect_stdout(self._buf))
        for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript"):
            lg = logging.getLogger(name)
            old = lg.level
            lg.setLevel(logging.ERROR)
            self._stack.callback(lg.setLevel, old)
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m edgekit.runtimes.onnx_export",
        description="Export a Hugging Face checkpoint to ONNX with a KV cache.",
    )
    ap.add_argument("source", help="checkpoint directory (or an onnx:fp32 export to quantize)")
    ap.add_argument("out", help="the artifact directory to write")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    say = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        art = export(a.source, a.out, a.precision, force=a.force, say=say)
    except EdgekitError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    print(json.dumps({"path": str(art.path), "format": art.format, "size_bytes": art.size_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
