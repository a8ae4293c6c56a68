"""Bounded fuzz of every reader of outside bytes (issue 15 item 6): benchmarks/fuzz.py's
targets under hypothesis, from real seed files and their mutations, a few seconds each; and
the crafted headers the long run is built to find (2^60 lengths and counts, deep nesting)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz.py"
_spec = importlib.util.spec_from_file_location("edgekit_bench_fuzz", _PATH)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz
_spec.loader.exec_module(fuzz)

_SEEDS: dict[str, list[bytes]] = {}


def _seeds(name: str) -> list[bytes]:
    if name not in _SEEDS:
        _SEEDS[name] = fuzz.seeds(name)
    return _SEEDS[name]


@st.composite
def _inputs(draw, name: str) -> bytes:
    seeds = _seeds(name)
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:  # overwrite a byte
            data[i] = draw(st.integers(0, 255))
        elif op == 1:  # write a little-endian 64-bit field (lengths, counts)
            v = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**60, 2**63, 2**64 - 1]))
            data[i : i + 8] = struct.pack("<Q", v)
        elif op == 2:  # cut
            del data[i:]
        else:  # insert
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.mark.parametrize("name", list(fuzz.TARGETS))
def test_reader_survives_fuzz(name):
    fuzz.TARGETS[name](_seeds(name)[0])  # the first seed is a whole real file: it reads
    for seed in _seeds(name)[1:]:  # (the SmolLM2 one is its header's first 64 KiB)
        fuzz.check(name, seed)

    @settings(
        max_examples=120,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=_inputs(name), measure=st.integers(0, 7))
    def run(data, measure):
        fuzz.check(name, data, measure=measure == 0)

    run()


def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _gguf(n_tensors: int, n_kv: int, body: bytes) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body + bytes(64)


CRAFTED = {
    "string length 2^60": _gguf(0, 1, struct.pack("<Q", 2**60)),
    "array count 2^60 of u8": _gguf(0, 1, _s(b"k") + struct.pack("<IIQ", 9, 0, 2**60)),
    "array count 2^60 of strings": _gguf(0, 1, _s(b"k") + struct.pack("<IIQ", 9, 8, 2**60)),
    "tensor count 2^60": _gguf(2**60, 0, b""),
    "kv count 2^60": _gguf(0, 2**60, b""),
    "n_dims 2^31": _gguf(1, 0, _s(b"t") + struct.pack("<I", 2**31)),
    "dims 2^62": _gguf(1, 0, _s(b"t") + struct.pack("<I4QIQ", 4, *[2**62] * 4, 0, 0)),
    "arrays nested 5000 deep": _gguf(0, 1, _s(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000),
    "invalid UTF-8 key": _gguf(0, 1, _s(b"\xff\xfe") + struct.pack("<I", 4)),
    "unknown value type": _gguf(0, 1, _s(b"k") + struct.pack("<I", 99)),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("name", ["gguf_header", "imatrix"])
def test_crafted_gguf_headers(name, case):
    fuzz.check(name, CRAFTED[case], measure=True)


@pytest.mark.parametrize(
    "name,text",
    [
        ("gotemplate", "{{ if 1 }}" * 3000),
        ("gotemplate", "{{ " + "(" * 3000 + ".x" + ")" * 3000 + " }}"),
        ("gotemplate", "{{ slice .Missing 1 }}{{ index 3 4 }}{{ lt 1 }}"),
        ("tokenizer_json", '{"model": {"type": "BPE", "vocab": {"a": "x"}}}'),
        ("tokenizer_json", '{"model": [], "added_tokens": 3}'),
        ("vllm_metrics", 'm{le="x"} 1\nm_bucket{le="nope"} 2\n'),
        ("vllm_stream", 'data: {"choices": [{"token_ids": 5}]}\ndata: [1, 2]\n'),
        ("vllm_stream", "Model loading took .0.25 GiB memory and 1.2.3 seconds\nGPU KV cache size: , tokens"),
        ("config_json", '{"model_type": "qwen3", "hidden_size": 1e400, "num_hidden_layers": -1}'),
        ("safetensors_header", '{"a": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 4]}}'),
    ],
)
def test_crafted_text(name, text):
    data = text.encode()
    if name == "safetensors_header":
        data = struct.pack("<Q", len(data)) + data + bytes(8)
    fuzz.check(name, data, measure=True)
