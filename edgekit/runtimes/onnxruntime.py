"""onnxruntime: ONNX exports of a checkpoint (`onnx:fp32`, `onnx:int8`, `onnx:int4`) on the CPU
(CPUExecutionProvider) or, with `onnxruntime-gpu` installed instead of `onnxruntime`, on a GPU
(CUDAExecutionProvider).

`load()` takes an export directory (edgekit.quantize.onnx_export) or a Hugging Face checkpoint
directory; a checkpoint is exported to fp32 once, in a child process (torch never enters the
process being measured), into edgekit's cache. A CUDA provider that fails to load makes
onnxruntime fall back to the CPU without an error, so the providers a session really runs
are checked against the ones asked for.

The KV cache stays in onnxruntime's own buffers between steps (I/O binding): each step feeds
the previous step's `present.*` outputs back as `past_key_values.*`, on the device, and only
the last position's logits come back to the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, MissingDependency, first_line
from edgekit.runtimes.base import Generation, default_kv_bytes, default_overhead

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.device import Device

name = "onnxruntime"
# "bf16": an unquantized checkpoint directory, exported to onnx:fp32 on first use
formats = ("onnx", "bf16")
devices = ("cpu", "cuda")
extra = "onnx"
description = "ONNX exports (fp32, int8, int4) through onnxruntime; CUDA with onnxruntime-gpu"
packages = ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript")
# capabilities (edgekit.runtimes.base): edgekit's ONNX export is an fp32 graph, its cache too
kv_cache_types = ("f32",)
EXPORT_FORMAT = "onnx:fp32"  # what a checkpoint is exported to on first use
plans_as = {"bf16": EXPORT_FORMAT}  # a checkpoint runs as its fp32 export


@dataclass(frozen=True)
class Options:
    """`-o export_dir=DIR`: where a checkpoint's ONNX export is kept (default: edgekit's cache)."""

    export_dir: str | None = None


_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def memory_overhead(
    arch: Arch,
    device: Device,
    batch: int = 1,
    options: Options | None = None,
    ctx: int | None = None,
    prompt: int | None = None,
) -> int:
    """The planner's overhead (edgekit.runtimes.base): on the CPU the measured model of
    edgekit.runtimes.cpu_memory (process, tokenizer, the second float32 KV cache a decode
    step holds, the arena the prefill touches); on a GPU the default estimate."""
    if device.kind != "cpu":
        return default_overhead(arch, device, batch, options)
    from edgekit.runtimes.cpu_memory import onnxruntime_cpu

    kv = default_kv_bytes(arch, ctx or prompt or 1, kv_cache_types[0], batch)
    return onnxruntime_cpu(arch, batch, ctx, prompt, kv)


def _installed(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def available() -> tuple[bool, str]:
    cpu, gpu = _installed("onnxruntime"), _installed("onnxruntime-gpu")
    if cpu and gpu:
        return False, (
            f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed; they overwrite each "
            "other's files (pip uninstall both, then install one)"
        )
    try:
        import onnxruntime as ort
    except ImportError:
        return False, 'onnxruntime is not installed (pip install "edgekit[onnx]")'
    except Exception as e:  # a broken install (e.g. a CUDA build without its libraries)
        return False, f"onnxruntime fails to import ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    dist = "onnxruntime-gpu" if gpu else "onnxruntime"
    try:
        providers = [p.replace("ExecutionProvider", "") for p in ort.get_available_providers()]
    except Exception:
        providers = []
    return True, f"{dist} {ort.__version__} ({', '.join(providers) or 'no providers'})"


def load(
    path,
    device: str | None = None,
    threads: int | None = None,
    n_ctx: int | None = None,
    scoring: bool | None = None,
    export_dir=None,
    **_ignored,
) -> OnnxSession:
    """Open an ONNX export directory, or a checkpoint directory (exported once to onnx:fp32
    under `export_dir`, default edgekit's cache). `device` "cpu" | "cuda" | None (CUDA when
    this onnxruntime has the provider and it loads, else the CPU); `threads` sets the CPU
    threads of one operator; `n_ctx` and `scoring` change nothing (the graph keeps no fixed
    context and gives logits only for the positions asked for)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("onnxruntime", extra) from None
    ok, why = available()
    if not ok:
        raise EdgekitError(f"onnxruntime is unusable: {why}")
    if device not in (None, "cpu", "cuda"):
        raise EdgekitError(f"onnxruntime runs on cpu or cuda, not '{device}'")
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".onnx":
        path = path.parent
    if not path.exists():
        raise EdgekitError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise EdgekitError(f"{path}: not an ONNX export directory (model.onnx) or a checkpoint directory")
    exported_from = None
    if not (path / "model.onnx").is_file():
        exported_from = path
        path = ensure_export(path, export_dir)

    available_providers = ort.get_available_providers()
    if device == "cuda" and _PROVIDERS["cuda"] not in available_providers:
        raise EdgekitError(
            "this onnxruntime has no CUDAExecutionProvider",
            "install onnxruntime-gpu instead of onnxruntime (never both), or use --device cpu",
        )
    if device is None:
        device = "cuda" if _PROVIDERS["cuda"] in available_providers and _cuda_device_present() else "cpu"
    providers = [_PROVIDERS["cuda"], _PROVIDERS["cpu"]] if device == "cuda" else [_PROVIDERS["cpu"]]

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(str(path / "model.onnx"), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise EdgekitError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from None
    running = sess.get_providers()
    if running[0] != providers[0]:
        raise EdgekitError(
            f"{providers[0]} was asked for but onnxruntime runs {running[0]} (it falls back "
            "silently when the CUDA libraries do not load)",
            "check the CUDA and cuDNN versions onnxruntime-gpu needs, or use --device cpu",
        )
    load_s = time.perf_counter() - t0
    return OnnxSession(sess, path, device, load_s, exported_from)


def _cuda_device_present() -> bool:
    """Whether a CUDA device exists, without importing torch (NVML, then the device nodes)."""
    from edgekit.nvml import gpu_count

    return gpu_count() > 0 or any(Path("/dev").glob("nvidia[0-9]*"))


def prepare(path, export_dir=None, **_ignored) -> Path:
    """The ONNX directory `load(path)` will open, exporting a checkpoint first if needed.
    Optional hook: a caller that times `load()` (edgekit bench) can call this beforehand so
    the one-time export is not counted as load time."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".onnx":
        return path.parent
    if path.is_dir() and not (path / "model.onnx").is_file():
        return ensure_export(path, export_dir)
    return path


def export_path(checkpoint_dir: Path, export_dir=None) -> Path:
    """Where the fp32 export of a checkpoint lives: `<cache>/onnx/<name>-<revision>`."""
    from edgekit.artifact import safe_stem
    from edgekit.models.source import open_checkpoint
    from edgekit.paths import cache_dir

    ck = open_checkpoint(str(checkpoint_dir))
    base = Path(export_dir).expanduser() if export_dir else cache_dir() / "onnx"
    return base / f"{safe_stem(ck.entry.name)}-{safe_stem(ck.revision)}-fp32"


def ensure_export(checkpoint_dir: Path, export_dir=None) -> Path:
    """The onnx:fp32 export of a checkpoint directory, made once (in a child process) and cached."""
    from edgekit.artifact import load_artifact

    dest = export_path(checkpoint_dir, export_dir)
    art = load_artifact(dest)
    if art is not None and art.format == EXPORT_FORMAT:
        return dest
    print(f"edgekit: exporting {checkpoint_dir} to ONNX (once; kept in {dest})", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "edgekit.quantize.onnx_export", str(checkpoint_dir), str(dest), "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise EdgekitError(f"{checkpoint_dir}: the ONNX export failed: {why.removeprefix('error: ')[:300]}")
    return dest


class OnnxSession:
    def __init__(self, sess, path: Path, device: str, load_s: float, exported_from: Path | None = None):
        import numpy as np
        from tokenizers import Tokenizer

        self.sess = sess
        self.path = path
        self.device = device
        self.load_s = load_s
        self.exported_from = exported_from
        self.providers = sess.get_providers()
        try:
            self.info = json.loads((path / "edgekit-onnx.json").read_text())
        except (OSError, ValueError):
            self.info = {}
        inputs = {i.name: i for i in sess.get_inputs()}
        for need in ("input_ids", "attention_mask"):
            if need not in inputs:
                raise EdgekitError(
                    f"{path}: model.onnx has no '{need}' input (not a causal LM export edgekit knows)"
                )
        self._has_positions = "position_ids" in inputs
        self._has_index = "logits_index" in inputs
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        outputs = [o.name for o in sess.get_outputs()]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        missing = [n for n in self.present_names if n not in outputs]
        if missing or "logits" not in outputs:
            raise EdgekitError(
                f"{path}: model.onnx lacks the outputs its KV cache needs ({(missing or ['logits'])[0]})"
            )
        self._past_shape = {}
        for n in self.past_names:
            shape = inputs[n].shape  # [batch, kv_heads, past, head_dim]
            if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
                raise EdgekitError(
                    f"{path}: input {n} has shape {shape}; expected [batch, kv_heads, past, head_dim]"
                )
            self._past_shape[n] = (shape[1], shape[3])
        if not self.past_names:
            raise EdgekitError(
                f"{path}: model.onnx has no past_key_values inputs (exported without a KV cache)"
            )
        self._past_dtype = np.float16 if "float16" in inputs[self.past_names[0]].type else np.float32
        if not (path / "tokenizer.json").is_file():
            raise EdgekitError(f"{path}: no tokenizer.json beside model.onnx")
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        vocab = self.info.get("vocab_size") or _config_vocab(path)
        logits_shape = next(o.shape for o in sess.get_outputs() if o.name == "logits")
        if isinstance(logits_shape[-1], int):
            vocab = logits_shape[-1]
        if not vocab:
            raise EdgekitError(f"{path}: the vocabulary size is unknown (no config.json)")
        self.n_vocab = int(vocab)
        self.eos = set(self.info.get("eos_token_ids") or _config_eos(path))
        self.format = self.info.get("format") or "onnx"
        self._ort_device = "cuda" if device == "cuda" else "cpu"

    # ---- the protocol --------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_bos).ids)

    def logits(self, tokens: list[int]):
        """float32 (len(tokens), n_vocab): one forward pass over the whole sequence, no cache."""
        import numpy as np

        if not tokens:
            raise EdgekitError("no tokens to score")
        ids = np.asarray([tokens], dtype=np.int64)
        if int(ids.max()) >= self.n_vocab or int(ids.min()) < 0:
            raise EdgekitError(f"token ids must lie in [0, {self.n_vocab})")
        n = ids.shape[1]
        feeds = self._feeds(ids, 0, np.arange(n, dtype=np.int64))
        for name in self.past_names:
            feeds[name] = self._empty_past(name, 1)
        try:
            out = self.sess.run(["logits"], feeds)[0]
        except Exception as e:
            raise EdgekitError(f"onnxruntime failed on {n} tokens ({first_line(e)})") from None
        if not self._has_index:
            out = out[:, -n:]
        return np.ascontiguousarray(out[0], dtype=np.float32)

    def generate(self, prompt: str, max_tokens: int = 64) -> Generation:
        """Greedy decoding with the KV cache; stops at EOS or after `max_tokens`. prompt_s is
        the time to the first token, decode_s the rest (as the other runtimes)."""
        toks = self.tokenize(prompt)
        if not toks:
            raise EdgekitError("the prompt has no tokens")
        out, first_s, rest_s = self._decode(toks, max_tokens, batch=1, stop_at_eos=True)
        text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        return Generation(text, len(toks), len(out[0]), self.load_s, first_s, rest_s, extra=self._extra())

    def generate_tokens(self, tokens: list[int], max_tokens: int, batch: int = 1) -> Generation:
        """Exactly `max_tokens` greedy tokens after `tokens` for `batch` copies of the prompt,
        EOS ignored, from an empty cache."""
        if max_tokens < 1:
            raise EdgekitError("max_tokens must be at least 1")
        if batch < 1:
            raise EdgekitError("batch must be at least 1")
        if not tokens:
            raise EdgekitError("no prompt tokens")
        out, first_s, rest_s = self._decode(list(tokens), max_tokens, batch=batch, stop_at_eos=False)
        return Generation(
            "", len(tokens), len(out[0]), self.load_s, first_s, rest_s, extra=self._extra(), batch=batch
        )

    def greedy(self, tokens: list[int], max_tokens: int) -> list[int]:
        """The greedy continuation (EOS ignored), for tests and checks."""
        return self._decode(list(tokens), max_tokens, batch=1, stop_at_eos=False)[0][0]

    def close(self) -> None:
        self.sess = None
        import gc

        gc.collect()

    # ---- decoding --------------------------------------------------------------------------------

    def _extra(self) -> dict:
        return {
            "device": self.device,
            "providers": list(self.providers),
            "format": self.format,
            "exported_from": str(self.exported_from) if self.exported_from else None,
        }

    def _feeds(self, ids, start: int, index) -> dict:
        import numpy as np

        b, n = ids.shape
        feeds = {"input_ids": ids, "attention_mask": np.ones((b, start + n), dtype=np.int64)}
        if self._has_positions:
            feeds["position_ids"] = np.broadcast_to(
                np.arange(start, start + n, dtype=np.int64), (b, n)
            ).copy()
        if self._has_index:
            feeds["logits_index"] = np.asarray(index, dtype=np.int64)
        return feeds

    def _empty_past(self, name: str, batch: int):
        import numpy as np

        heads, dim = self._past_shape[name]
        return np.zeros((batch, heads, 0, dim), dtype=self._past_dtype)

    def _decode(self, tokens: list[int], max_tokens: int, batch: int, stop_at_eos: bool):
        """Greedy steps with I/O binding: the presents stay where onnxruntime put them (on the
        GPU for CUDA) and are bound as the next step's pasts; only the logits of the last
        position are copied to the host, and the per-step host work is an argmax."""
        import numpy as np
        import onnxruntime as ort

        sess = self.sess
        if sess is None:
            raise EdgekitError("the session is closed")
        if int(max(tokens)) >= self.n_vocab or int(min(tokens)) < 0:
            raise EdgekitError(f"token ids must lie in [0, {self.n_vocab})")
        dev = self._ort_device
        n = len(tokens)
        ids = np.tile(np.asarray([tokens], dtype=np.int64), (batch, 1))
        past = {
            name: ort.OrtValue.ortvalue_from_numpy(self._empty_past(name, batch), dev, 0)
            for name in self.past_names
        }
        out: list[list[int]] = [[] for _ in range(batch)]
        perf = time.perf_counter
        t0 = perf()
        first = None
        pos = 0
        step_ids = ids
        last = np.asarray([n - 1], dtype=np.int64)
        one = np.zeros(1, dtype=np.int64)
        for step in range(max_tokens):
            binding = sess.io_binding()
            feeds = self._feeds(step_ids, pos, last if step == 0 else one)
            for k, v in feeds.items():
                binding.bind_cpu_input(k, v)
            for k, v in past.items():
                binding.bind_ortvalue_input(k, v)
            binding.bind_output("logits", "cpu")
            for k in self.present_names:
                binding.bind_output(k, dev, 0)
            try:
                sess.run_with_iobinding(binding)
            except Exception as e:
                raise EdgekitError(f"onnxruntime failed at step {step} ({first_line(e)})") from None
            values = binding.get_outputs()
            logits = values[0].numpy()
            nxt = logits[:, -1, :].argmax(-1)
            for i in range(batch):
                out[i].append(int(nxt[i]))
            if first is None:
                first = perf()
            if stop_at_eos and int(nxt[0]) in self.eos:
                out[0].pop()
                break
            past = dict(zip(self.past_names, values[1:], strict=True))
            pos += step_ids.shape[1]
            step_ids = nxt.astype(np.int64).reshape(batch, 1)
        end = perf()
        first = first or end
        return out, first - t0, end - first


def _config_vocab(path: Path) -> int | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    return cfg.get("vocab_size")


def _config_eos(path: Path) -> list[int]:
    ids: list[int] = []
    for f in ("generation_config.json", "config.json"):
        try:
            v = json.loads((path / f).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        if v is not None:
            ids += v if isinstance(v, list) else [v]
    return ids
