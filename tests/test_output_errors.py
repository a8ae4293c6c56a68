"""Outputs the machine will not take (issue 15 item 3): a path under /proc or below a regular
file, a read-only file system, a full disk, at every write site (artifact, cache, results
store, Ollama store). Each is one line naming the path and the cause, exit 2, no traceback
and nothing partial; "internal error" is only for edgekit's own bugs.

Full and read-only file systems are real: small tmpfs mounts (root only; skipped elsewhere)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.outputs import OutputError, require_writable_dir


def _edgekit(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-2000:]
    assert lines and lines[-1].startswith("edgekit: error: "), r.stderr[-2000:]
    # progress lines may come first on a terminal-less run; the error is one line
    assert sum(ln.startswith("edgekit: ") for ln in lines) == 1, r.stderr
    return lines[-1]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@contextlib.contextmanager
def _tmpfs(where: Path, *options: str):
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_fs(tmp_path):
    """A file system with no free byte left: a 1 MiB tmpfs filled by one file."""
    with _tmpfs(tmp_path / "full", "size=1m") as root:
        with open(root / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        yield root


@pytest.fixture
def read_only_fs(tmp_path):
    with _tmpfs(tmp_path / "ro", "size=1m", "ro") as root:
        yield root


def _state(root: Path) -> list[str]:
    """What a failed run left, less the filler and the (empty) lock files concurrent runs share."""
    return [f for f in _files(root) if f != "filler" and ".lock" not in f]


# ---- checked before any work -------------------------------------------------------------------


def test_an_output_under_proc_or_below_a_file_is_refused_at_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, cause in [
        ("/proc/edgekit-out", "cannot create a directory there"),
        (blocker / "sub" / "dir", f"not a directory ({blocker} is a file)"),
        (blocker, "not a directory"),
    ]:
        with pytest.raises(OutputError) as e:
            require_writable_dir(out)
        assert e.value.one_line() == f"--out {out}: {cause}"
    assert _files(tmp_path) == ["a-file"]


def test_the_probe_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    assert require_writable_dir(out) == out
    assert _files(tmp_path) == []


def test_a_read_only_file_system_is_refused_by_the_probe(read_only_fs):
    with pytest.raises(OutputError) as e:
        require_writable_dir(read_only_fs / "out", "--store")
    assert e.value.one_line() == f"--store {read_only_fs / 'out'}: read-only file system"


@pytest.mark.parametrize(
    "out_of",
    [
        lambda tmp: Path("/proc/edgekit-out"),
        lambda tmp: tmp / "a-file" / "out",
    ],
    ids=["proc", "below-a-file"],
)
def test_quantize_refuses_an_output_it_cannot_write_before_any_work(out_of, tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = out_of(tmp_path)
    for args in (["--format", "gguf:Q8_0"], ["--target", "cpu"]):
        line = _one_line(_edgekit("quantize", "smollm2-135m", *args, "--out", out))
        assert line.startswith(f"edgekit: error: --out {out}: "), line
    assert _files(tmp_path) == ["a-file"]


def test_bench_import_refuses_a_read_only_store(read_only_fs, tmp_path):
    line = _one_line(_edgekit("bench", "import", tmp_path, "--store", read_only_fs / "store"))
    assert line == f"edgekit: error: --store {read_only_fs / 'store'}: read-only file system"


# ---- a full disk at every write site --------------------------------------------------------


@pytest.mark.llamacpp
@pytest.mark.torch
def test_a_full_disk_under_the_artifact_is_one_line_and_leaves_nothing(tiny_qwen3, full_fs):
    out = full_fs / "artifacts"
    line = _one_line(
        _edgekit("quantize", tiny_qwen3, "--format", "gguf:Q8_0", "--imatrix", "none", "--out", out)
    )
    assert f"{out}/" in line and "no space left on device" in line.lower(), line
    assert _state(full_fs) in ([], ["artifacts"])  # at most the empty directory it made


@pytest.mark.llamacpp
@pytest.mark.torch
def test_a_full_disk_under_the_cache_is_one_line_and_leaves_no_entry(tiny_qwen3, tmp_path, full_fs):
    """A GGUF input is imported into the cache first: that write fails, nothing torn stays."""
    made = _edgekit(
        "quantize",
        tiny_qwen3,
        "--format",
        "gguf:Q8_0",
        "--imatrix",
        "none",
        "--out",
        tmp_path / "a",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    gguf = tmp_path / "a" / json.loads(made.stdout)["file"]
    cache = full_fs / "cache"
    r = _edgekit(
        "quantize",
        gguf,
        "--format",
        "gguf:Q4_0",
        "--out",
        tmp_path / "b",
        env={"EDGEKIT_CACHE_DIR": str(cache)},
    )
    line = _one_line(r)
    assert f"{cache}" in line and "no space left on device" in line.lower(), line
    assert not any(f.endswith((".safetensors", "config.json")) for f in _state(full_fs)), _state(full_fs)
    assert _files(tmp_path / "b") == []


def test_a_full_disk_under_the_results_store_is_one_line(tmp_path, full_fs):
    from edgekit.bench.results_store import SCHEMA

    run = {"schema": SCHEMA, "id": "run-1", "batches": [], "host": {"name": "elsewhere"}}
    src = tmp_path / "other-machine"
    src.mkdir()
    (src / "run.json").write_text(json.dumps(run))
    r = _edgekit("bench", "import", src, "--store", full_fs / "store")
    line = _one_line(r)
    assert "no space left on device" in line.lower() and str(full_fs / "store") in line, line


def test_a_full_disk_under_the_ollama_store_is_one_line_and_leaves_nothing(tmp_path, full_fs):
    from tests.package.conftest import write_gguf

    (tmp_path / "art").mkdir()
    gguf = write_gguf(tmp_path / "art" / "m.gguf")
    line = _one_line(_edgekit("package", "ollama", gguf, "--name", "m", "--store", full_fs / "models"))
    assert "no space left on device" in line.lower() and str(full_fs / "models") in line, line
    assert not any("blobs/sha256-" in f for f in _state(full_fs)), _state(full_fs)
