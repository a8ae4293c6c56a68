"""Bad input gives a one-line error, a non-zero exit, and nothing at the output path."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def edgekit(*args, env=None, preexec=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=300,
        preexec_fn=preexec,
    )


def assert_one_line_error(r, *needles):
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def assert_nothing_written(out: Path):
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.endswith(".imatrix.gguf")), (
        list(out.iterdir()) if out.exists() else None
    )


def quantize(model, out, *extra, **kw):
    return edgekit(
        "quantize",
        str(model),
        "--format",
        "gguf:Q4_K_M",
        "--imatrix",
        "none",
        "--out",
        str(out),
        *extra,
        **kw,
    )


def test_truncated_safetensors(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "truncated")
    assert_nothing_written(tmp_path / "out")


def test_garbled_safetensors_header(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"\xff" * 32
    f.write_bytes(bytes(data))
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "corrupt safetensors header")
    assert_nothing_written(tmp_path / "out")


def test_gguf_with_bad_magic(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGML" + b"\0" * 64)
    r = quantize(f, tmp_path / "out")
    assert_one_line_error(r, "bad magic")
    assert_nothing_written(tmp_path / "out")


def test_truncated_gguf(tmp_path, tiny_qwen3):
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    good = tmp_path / "good.gguf"
    convert(_local(Path(tiny_qwen3), "local"), good, Recipe(mix="Q8_0"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size - 4096])
    r = quantize(bad, tmp_path / "out")
    assert_one_line_error(r, "truncated")
    assert_nothing_written(tmp_path / "out")


def test_unsupported_architecture(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mamba2"
    (d / "config.json").write_text(json.dumps(cfg))
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "mamba2")
    assert_nothing_written(tmp_path / "out")


def test_known_but_unconvertible_architecture(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "smollm3"
    (d / "config.json").write_text(json.dumps(cfg))
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "no GGUF converter for smollm3")
    assert_nothing_written(tmp_path / "out")


def test_missing_tokenizer(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    (d / "tokenizer.json").unlink()
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "tokenizer")
    assert_nothing_written(tmp_path / "out")


def test_pickle_only_checkpoint_is_refused(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    r = quantize(d, tmp_path / "out")
    assert_one_line_error(r, "safetensors only")


def _limit_file_size():
    # a full disk, as the writer sees it: writes past 128 KiB fail with EFBIG instead of a signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 17, 1 << 17))


def test_full_output_directory(tiny_qwen3, tmp_path):
    out = tmp_path / "out"
    r = quantize(tiny_qwen3, out, preexec=_limit_file_size)
    assert_one_line_error(r, "cannot write")
    assert_nothing_written(out)


def test_unwritable_output_directory(tiny_qwen3, tmp_path):
    if os.geteuid() == 0:
        out = Path("/proc/edgekit-cannot-write-here")
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    r = quantize(tiny_qwen3, out)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_unknown_gguf_type_and_bad_override(tiny_qwen3, tmp_path):
    r = edgekit("quantize", str(tiny_qwen3), "--format", "gguf:Q9_K", "--out", str(tmp_path))
    assert_one_line_error(r, "Q9_K")
    r = quantize(tiny_qwen3, tmp_path / "o", "--tensor-type", "ffn_(=Q8_0")
    assert_one_line_error(r, "regular expression")


def test_interrupted_run_leaves_no_partial_file(tiny_qwen3, tmp_path):
    """Kill the converter mid-write: the destination never appears, only a hidden .part may remain."""
    out = tmp_path / "out"
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from edgekit.cli.main import main; main()",
            "quantize",
            str(tiny_qwen3),
            "--format",
            "gguf:F32",
            "--imatrix",
            "none",
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    import time

    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None and not (out.exists() and any(out.iterdir())):
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    finals = [f for f in out.iterdir() if not f.name.startswith(".")] if out.exists() else []
    if p.returncode == 0:
        pytest.skip("the conversion finished before the interrupt arrived")
    assert p.returncode == 130 and b"interrupted" in err, err[-300:]
    assert finals == []
    shutil.rmtree(out, ignore_errors=True)
