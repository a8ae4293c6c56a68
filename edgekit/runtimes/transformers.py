"""transformers: the BF16 reference and the GPTQ/AWQ/FP8 (compressed-tensors) artifacts, on
the CPU (weights dequantized at load: there are no int4/FP8 CPU kernels) or on a GPU.

Loading a quantized MoE checkpoint is where a silent failure hides (a layout the loader
does not map leaves the experts at their random initial values, with at most a warning):
every load of a compressed-tensors checkpoint is checked against the checkpoint itself,
tensor by tensor for a sample of the expert and attention weights."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError, MissingDependency, first_line
from edgekit.runtimes.base import Generation, default_overhead

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.device import Device

name = "transformers"
formats = ("bf16", "gptq", "awq", "fp8")
devices = ("cpu", "cuda")
extra = "torch"
description = (
    "transformers on CPU or CUDA: the BF16 reference and compressed-tensors GPTQ/AWQ/FP8 (dequantized on CPU)"
)
packages = ("transformers", "torch", "compressed-tensors")
# capabilities (edgekit.runtimes.base)
kv_cache_types = ("f16", "bf16")


@dataclass(frozen=True)
class Options:
    """`-o dtype=float32|bfloat16|float16`: the dtype the model runs in (default: float32 for
    scoring, bfloat16 for speed)."""

    dtype: str | None = None


def memory_overhead(
    arch: Arch,
    device: Device,
    batch: int = 1,
    options: Options | None = None,
    ctx: int | None = None,
    prompt: int | None = None,
) -> int:
    """The planner's overhead (edgekit.runtimes.base): on the CPU the measured model of
    edgekit.runtimes.cpu_memory (process, tokenizer, prefill logits and scores in the
    dtype `-o dtype` asks for, bfloat16 by default as edgekit runs it for speed); on a GPU
    the default estimate."""
    if device.kind != "cpu":
        return default_overhead(arch, device, batch, options)
    from edgekit.runtimes.cpu_memory import transformers_cpu

    return transformers_cpu(arch, batch, ctx, prompt, getattr(options, "dtype", None))


def available() -> tuple[bool, str]:
    try:
        import torch
        import transformers
    except ImportError:
        return False, f'torch and transformers are not installed (pip install "edgekit[{extra}]")'
    return True, f"transformers {transformers.__version__}, torch {torch.__version__}"


def load(
    path,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    scoring: bool | None = None,
    **_ignored,
) -> TransformersSession:
    """Load a checkpoint directory. For scoring the logits are computed in float32 (what the
    quality store compares against); a speed measurement (`scoring=False`) runs the model as
    it is deployed, in bfloat16."""
    dtype = dtype or ("bfloat16" if scoring is False else "float32")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MissingDependency("torch and transformers", extra) from None
    from edgekit._quiet import quiet_tqdm, quiet_transformers

    quiet_transformers()
    quiet_tqdm()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EdgekitError(f"{path}: not a transformers checkpoint directory (no config.json)")
    if threads:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = json.loads((path / "config.json").read_text())
    qcfg = cfg.get("quantization_config") or {}
    method = qcfg.get("quant_method")
    if method not in (None, "compressed-tensors"):
        raise EdgekitError(
            f"{path}: quantization method '{method}' is not one edgekit loads "
            "(compressed-tensors checkpoints and unquantized ones are)"
        )
    torch_dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    load_path = "transformers"
    loaded: Any
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=torch_dtype,
            device_map=device,
            output_loading_info=True,
            trust_remote_code=False,
            use_safetensors=True,
        )
        model, info = loaded
    except (RuntimeError, ValueError, KeyError) as e:
        if not method:
            raise EdgekitError(f"{path}: transformers cannot load it ({first_line(e)})") from None
        # transformers' own decompression does not cover every layout (FP8 block scales on
        # fused MoE experts fail in 5.17): dequantize with compressed-tensors ourselves
        from edgekit.runtimes.ct_checkpoint import load_dequantized

        model, info = load_dequantized(path, torch_dtype, device)
        load_path = "edgekit-dequantized (compressed-tensors)"
    _check_load_info(path, info)
    if method:
        from edgekit.runtimes.ct_checkpoint import verify_against_checkpoint

        _unquantized_to(model, torch_dtype)

        verify_against_checkpoint(model, path)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    return TransformersSession(model, tok, time.perf_counter() - t0, device, load_path)


def _unquantized_to(model, dtype) -> None:
    """transformers 5.17 leaves a compressed-tensors checkpoint's tensors that its weight
    conversions renamed or merged (Mixtral's block_sparse_moe.gate -> mlp.gate, per-expert
    w1/w3 -> fused gate_up_proj) in the file's BF16 whatever dtype was asked for, and the
    router's matmul then fails on float32 activations: give every module that holds no
    quantized weights the dtype asked for (exact from BF16 to float32)."""
    for mod in model.modules():
        if getattr(mod, "quantization_scheme", None) is not None:
            continue
        for p in mod.parameters(recurse=False):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)


def _check_load_info(path: Path, info: dict) -> None:
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k]
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        what = missing or unexpected or mismatched
        kind = "missing" if missing else "unexpected" if unexpected else "mismatched"
        raise EdgekitError(
            f"{path}: {len(what)} {kind} weights when loading (e.g. {what[0]}); refusing to run a "
            "model with weights left at random values"
        )


class TransformersSession:
    def __init__(self, model, tokenizer, load_s: float, device: str, load_path: str):
        self.model = model
        self.tokenizer = tokenizer
        self.load_s = load_s
        self.device = device
        self.load_path = load_path
        self.n_vocab = int(model.config.get_text_config().vocab_size)

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_bos)["input_ids"]

    def logits(self, tokens: list[int]):
        import torch

        with torch.no_grad():
            x = torch.tensor([tokens], device=self.model.device)
            out = self.model(x, use_cache=False).logits[0]
        return out.float().cpu().numpy()

    def generate(self, prompt: str, max_tokens: int = 64) -> Generation:
        """Greedy decoding with the KV cache, one token per forward pass, timed like the
        llama.cpp runtime: prompt_s until the first token, decode_s for the rest."""
        import torch

        toks = self.tokenize(prompt, add_bos=False)
        eos = self.tokenizer.eos_token_id
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)
        out: list[int] = []
        with torch.no_grad():
            t0 = time.perf_counter()
            res = self.model(torch.tensor([toks], device=self.model.device), use_cache=True)
            nxt = int(res.logits[0, -1].argmax())
            sync()
            first = time.perf_counter()
            past = res.past_key_values
            while nxt != eos and len(out) < max_tokens:
                out.append(nxt)
                if len(out) >= max_tokens:
                    break
                res = self.model(
                    torch.tensor([[nxt]], device=self.model.device), past_key_values=past, use_cache=True
                )
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
            sync()
            end = time.perf_counter()
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        return Generation(
            text,
            len(toks),
            len(out),
            self.load_s,
            first - t0,
            end - first,
            extra={"device": self.device, "load_path": self.load_path},
        )

    def generate_tokens(self, tokens: list[int], max_tokens: int, batch: int = 1) -> Generation:
        """Exactly `max_tokens` greedy tokens for `batch` copies of the prompt, KV cache on,
        from an empty cache; prompt_s is the time to the first token of every sequence."""
        import torch

        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)
        dev = self.model.device
        with torch.no_grad():
            x = torch.tensor([tokens] * batch, device=dev)
            sync()
            t0 = time.perf_counter()
            res = self.model(x, use_cache=True)
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            first = time.perf_counter()
            past = res.past_key_values
            for _ in range(max_tokens - 1):
                res = self.model(nxt, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            end = time.perf_counter()
        return Generation(
            "",
            len(tokens),
            max_tokens,
            self.load_s,
            first - t0,
            end - first,
            extra={"device": self.device, "load_path": self.load_path},
            batch=batch,
        )

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()
