"""A damaged checkpoint never becomes an artifact (issue 15 item 1): GGUF, llm-compressor, ONNX.

Each case damages a copy of the real default checkpoint (SmolLM2-135M, imported once per
session) the way checkpoints break in practice, by editing its safetensors header or a few
bytes of its data, and runs the real CLI: one line on stderr, exit 2, no traceback, nothing
at --out. The undamaged copy still converts, and llama.cpp loads and runs what it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

Header = dict


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _read(path: Path) -> tuple[Header, int]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)), 8 + n


def _copy_with_header(src: Path, dst: Path, header: Header, data_start: int, tail: bytes = b"") -> None:
    """`src`'s data section under a new header (the offsets are relative to the data), then `tail`."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(struct.pack("<Q", len(raw)) + raw)
        _copy_range(fi, fo, data_start)
        fo.write(tail)


def _copy_range(fi, fo, start: int) -> None:
    """The rest of `fi` from `start` onto `fo`, in the kernel (a reflink where the file system
    has them): the damaged copies cost little more than their headers."""
    fo.flush()
    left = os.fstat(fi.fileno()).st_size - start
    while left > 0:
        n = os.copy_file_range(fi.fileno(), fo.fileno(), left, start)
        if n == 0:
            break
        start, left = start + n, left - n


def _drop(name: str) -> Callable[[Header], None]:
    return lambda h: h.pop(name) and None


def _transpose(name: str) -> Callable[[Header], None]:
    def edit(h: Header) -> None:
        h[name]["shape"] = list(reversed(h[name]["shape"]))

    return edit


def _offsets_past_end(name: str) -> Callable[[Header], None]:
    def edit(h: Header) -> None:
        a, b = h[name]["data_offsets"]
        h[name]["data_offsets"] = [a + (1 << 40), b + (1 << 40)]

    return edit


def _alias(name: str, other: str) -> Callable[[Header], None]:
    # two tensors of one shape: the second's offsets point into the first's bytes
    def edit(h: Header) -> None:
        a, b = h[other]["data_offsets"]
        h[name]["data_offsets"] = [a + 2, b + 2]

    return edit


def _add(name: str) -> Callable[[Header], None]:
    def edit(h: Header) -> None:
        end = max(spec["data_offsets"][1] for key, spec in h.items() if key != "__metadata__")
        h[name] = {"dtype": "BF16", "shape": [EXTRA], "data_offsets": [end, end + 2 * EXTRA]}

    return edit


def _dtype(name: str, dtype: str) -> Callable[[Header], None]:
    def edit(h: Header) -> None:
        h[name]["dtype"] = dtype

    return edit


K1 = "model.layers.1.self_attn.k_proj.weight"
K2 = "model.layers.2.self_attn.k_proj.weight"
Q0 = "model.layers.0.self_attn.q_proj.weight"
DOWN = "model.layers.5.mlp.down_proj.weight"

HEADER_EDITS: dict[str, tuple[Callable[[Header], None], str]] = {
    "missing k_proj": (_drop(K1), f"no tensor {K1}"),
    "wrong shape": (_transpose(K1), f"tensor {K1} has shape"),
    "offsets past the end": (_offsets_past_end(K1), "truncated safetensors file"),
    "overlapping offsets": (_alias(K2, K1), "overlap"),
    "unknown dtype": (_dtype(K1, "F7"), "unsupported dtype F7"),
    "integer dtype": (_dtype(K1, "I16"), f"tensor {K1} is I16"),
    "a tensor with no GGUF name": (_add("model.layers.3.self_attn.extra.weight"), "unexpected tensors"),
    "a bias the architecture has not": (_add("model.layers.3.self_attn.q_proj.bias"), "unexpected tensors"),
}
EXTRA = 576  # elements of an added tensor, stored after the data


@pytest.fixture(scope="module")
def source(smollm2_checkpoint) -> Path:
    return smollm2_checkpoint.path


def _checkpoint(source: Path, dst: Path) -> Path:
    """A copy of the checkpoint's small files; the weights are written by each case."""
    dst.mkdir()
    for f in source.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    return dst


def _refused(ckpt: Path, out: Path, needle: str, fmt: str = "gguf:Q8_0") -> None:
    r = _edgekit("quantize", str(ckpt), "--format", fmt, "--out", str(out))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and needle in lines[0], lines
    # nothing but the run's lock files (which guard --out against a concurrent run)
    left = [
        p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock") and ".locks" not in p.parts
    ]
    assert not left, left


@pytest.mark.parametrize("case", list(HEADER_EDITS))
def test_a_damaged_header_is_refused_in_one_line(case, source, tmp_path):
    edit, needle = HEADER_EDITS[case]
    ckpt = _checkpoint(source, tmp_path / "ckpt")
    header, data_start = _read(source / "model.safetensors")
    edit(header)
    tail = bytes(2 * EXTRA)  # room for an added tensor
    _copy_with_header(source / "model.safetensors", ckpt / "model.safetensors", header, data_start, tail)
    _refused(ckpt, tmp_path / "out", needle)


def test_a_config_with_more_layers_than_the_weights_is_refused(source, tmp_path):
    ckpt = _checkpoint(source, tmp_path / "ckpt")
    os.link(source / "model.safetensors", ckpt / "model.safetensors")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_hidden_layers"] += 4
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _refused(ckpt, tmp_path / "out", f"num_hidden_layers {cfg['num_hidden_layers']}")


def _poke(path: Path, name: str, index: int, value: float) -> None:
    import numpy as np

    header, data_start = _read(path)
    spec = header[name]
    assert spec["dtype"] == "BF16"
    bits = np.array([value], dtype=np.float32).view(np.uint32) >> 16
    with open(path, "r+b") as fh:
        fh.seek(data_start + spec["data_offsets"][0] + 2 * index)
        fh.write(bits.astype("<u2").tobytes())


@pytest.mark.parametrize(("name", "value", "kind"), [(Q0, float("nan"), "NaN"), (DOWN, float("inf"), "Inf")])
def test_non_finite_weights_are_refused_with_the_tensor_name(name, value, kind, source, tmp_path):
    ckpt = _checkpoint(source, tmp_path / "ckpt")
    shutil.copy(source / "model.safetensors", ckpt / "model.safetensors")
    _poke(ckpt / "model.safetensors", name, 1234, value)
    _refused(ckpt, tmp_path / "out", f"tensor {name} holds {kind}")


def _truncated(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read(src.stat().st_size // 2))


def _bad_json(src: Path, dst: Path) -> None:
    _, data_start = _read(src)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read(8) + b"{" * (data_start - 8))
        _copy_range(fi, fo, data_start)


def _huge_length(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(struct.pack("<Q", 1 << 60))
        _copy_range(fi, fo, 8)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (_truncated, "truncated safetensors file"),
        (_bad_json, "corrupt safetensors header"),
        (_huge_length, "corrupt safetensors header (length 1152921504606846976"),
    ],
    ids=["truncated", "bad JSON", "2^60 header length"],
)
def test_a_broken_file_is_refused_in_one_line(damage, needle, source, tmp_path):
    ckpt = _checkpoint(source, tmp_path / "ckpt")
    damage(source / "model.safetensors", ckpt / "model.safetensors")
    _refused(ckpt, tmp_path / "out", needle)


@pytest.mark.slow
def test_the_undamaged_checkpoint_converts_and_loads_in_llamacpp(source, tmp_path):
    import llama_cpp

    ckpt = _checkpoint(source, tmp_path / "ckpt")
    header, data_start = _read(source / "model.safetensors")
    # the same checkpoint through the header rewrite the damaged cases use
    _copy_with_header(source / "model.safetensors", ckpt / "model.safetensors", header, data_start)
    out = tmp_path / "out"
    r = _edgekit("quantize", str(ckpt), "--format", "gguf:Q8_0", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    path = out / json.loads(r.stdout)["file"]
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False)
    try:
        ids = llm.tokenize(b"The capital of France is")
        llm.eval(ids)
        assert llm.n_tokens == len(ids)
    finally:
        llm.close()


@pytest.mark.parametrize("fmt", ["fp8:dynamic", "onnx:fp32"])
def test_the_llm_compressor_and_onnx_paths_check_before_loading(fmt, source, tmp_path):
    ckpt = _checkpoint(source, tmp_path / "ckpt")
    header, data_start = _read(source / "model.safetensors")
    header.pop(K1)
    _copy_with_header(source / "model.safetensors", ckpt / "model.safetensors", header, data_start)
    _refused(ckpt, tmp_path / "out", f"no tensor {K1}", fmt)
