"""`edgekit cache show|prune|clear`: exact JSON, least-recently-used pruning, and nothing
outside the cache directory touched whatever the entries are called or point at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import EdgekitError


def run(*args) -> dict:
    r = CliRunner().invoke(cli, ["cache", *args, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _file(p: Path, n: int, age_s: float = 0.0) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * n)
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(d))
    monkeypatch.setenv("EDGEKIT_TENSOR_CACHE_MAX", "250")
    _file(d / "tensors" / "old.tensor", 100, age_s=300)
    _file(d / "tensors" / "mid.tensor", 200, age_s=200)
    _file(d / "tensors" / "new.tensor", 50, age_s=100)
    _file(d / "imatrix" / "m.imatrix.gguf", 40, age_s=50)
    _file(d / "imatrix" / "m.imatrix.gguf.sha256", 65, age_s=50)
    _file(d / "imports" / "ck-1" / "model.safetensors", 1000, age_s=400)
    _file(d / "imports" / "ck-1" / "sub" / "config.json", 24, age_s=400)
    _file(d / "imports" / "ck-1.sha256", 65, age_s=400)
    os.utime(d / "imports" / "ck-1", (time.time() - 400,) * 2)
    _file(d / "bench" / "runs" / "r.json", 10)
    _file(d / "locks" / "x.lock", 0)
    _file(d / "zz-newer" / "thing", 7)
    return d


def _area(name, description, entries, nbytes, default):
    return {"area": name, "description": description, "entries": entries, "bytes": nbytes, "default": default}


def test_show_json_is_exact(cache):
    from edgekit.cache_areas import KNOWN

    assert run("show") == {
        "cache_dir": str(cache),
        "areas": [
            _area("tensors", KNOWN["tensors"][0], 3, 350, True),
            _area("imatrix", KNOWN["imatrix"][0], 1, 105, True),
            _area("imports", KNOWN["imports"][0], 1, 1089, True),
            _area("bench", KNOWN["bench"][0], 1, 10, False),
            _area("zz-newer", "not an area this edgekit writes", 1, 7, False),
            _area("locks", "lock files of running edgekit processes (never removed)", 1, 0, False),
        ],
        "entries": 8,
        "bytes": 1561,
        "tensor_cache_max_bytes": 250,
    }


def test_show_text(cache):
    r = CliRunner().invoke(cli, ["cache", "show"], catch_exceptions=False)
    assert r.exit_code == 0
    assert f"cache {cache}" in r.output
    assert "tensors" in r.output and "3 entries" in r.output
    assert "quantized tensors: capped at" in r.output


def test_show_with_no_cache_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("EDGEKIT_TENSOR_CACHE_MAX", "off")
    got = run("show")
    assert got == {"cache_dir": str(tmp_path / "none"), "areas": [], "entries": 0, "bytes": 0,
                   "tensor_cache_max_bytes": None}  # fmt: skip
    assert not (tmp_path / "none").exists()


def test_prune_to_the_tensor_cap_removes_the_least_recently_used(cache):
    assert run("prune") == {
        "max_bytes": 250,
        "areas": [{"area": "tensors", "removed": 1, "freed_bytes": 100, "entries": 2, "bytes": 250}],
        "removed": 1,
        "freed_bytes": 100,
    }
    assert sorted(p.name for p in (cache / "tensors").iterdir()) == ["mid.tensor", "new.tensor"]


def test_prune_max_size_across_areas(cache):
    got = run("prune", "--max-size", "300")
    # oldest first across the default areas: the import (400 s), old (300 s), mid (200 s)
    assert got["max_bytes"] == 300
    assert {a["area"]: (a["removed"], a["freed_bytes"]) for a in got["areas"]} == {
        "tensors": (2, 300),
        "imatrix": (0, 0),
        "imports": (1, 1089),
        "onnx": (0, 0),
        "reference": (0, 0),
        "quality": (0, 0),
        "cpu": (0, 0),
        "vllm-logs": (0, 0),
    }
    assert (got["removed"], got["freed_bytes"]) == (3, 1389)
    assert not (cache / "imports" / "ck-1").exists() and not (cache / "imports" / "ck-1.sha256").exists()
    assert (cache / "bench" / "runs" / "r.json").exists()  # not a default area
    assert (cache / "imatrix" / "m.imatrix.gguf.sha256").exists()


def test_prune_one_area(cache):
    got = run("prune", "--max-size", "0", "--area", "imatrix")
    assert got == {
        "max_bytes": 0,
        "areas": [{"area": "imatrix", "removed": 1, "freed_bytes": 105, "entries": 0, "bytes": 0}],
        "removed": 1,
        "freed_bytes": 105,
    }
    assert len(list((cache / "tensors").iterdir())) == 3


def test_clear(cache):
    got = run("clear", "--area", "tensors", "--area", "bench")
    assert got == {
        "max_bytes": None,
        "areas": [
            {"area": "tensors", "removed": 3, "freed_bytes": 350, "entries": 0, "bytes": 0},
            {"area": "bench", "removed": 1, "freed_bytes": 10, "entries": 0, "bytes": 0},
        ],
        "removed": 4,
        "freed_bytes": 360,
    }
    assert (cache / "tensors").is_dir() and not any((cache / "tensors").iterdir())
    assert (cache / "imports" / "ck-1" / "model.safetensors").exists()


def test_odd_names_and_links_never_reach_outside(cache, tmp_path):
    outside = tmp_path / "precious"
    _file(outside / "keep.txt", 5)
    area = cache / "tensors"
    (area / "link-to-dir").symlink_to(outside, target_is_directory=True)
    (area / "link-to-file").symlink_to(outside / "keep.txt")
    (area / "dir-with-link").mkdir()
    (area / "dir-with-link" / "inner").symlink_to(outside, target_is_directory=True)
    _file(area / "-rf *\n; rm -rf ~", 3)
    _file(Path(os.fsdecode(bytes(area) + b"/\xff\xfe odd .tensor")), 4)
    (cache / "linked-area").symlink_to(outside, target_is_directory=True)

    assert "linked-area" not in {a["area"] for a in run("show")["areas"]}
    got = run("clear", "--area", "tensors")
    assert got["removed"] == 3 + 5 and got["areas"][0]["entries"] == 0
    assert not any(area.iterdir())
    assert (outside / "keep.txt").read_bytes() == b"xxxxx"
    for bad in ("linked-area", "../precious", "..", ".", "locks", "no-such-area", "tensors/x"):
        with pytest.raises(EdgekitError):
            cli.main(["cache", "clear", "--area", bad], standalone_mode=False)
    assert (outside / "keep.txt").exists() and (cache / "locks" / "x.lock").exists()


def test_user_errors_are_one_line(cache):
    def main(*args):
        return subprocess.run(
            [sys.executable, "-c", "from edgekit.cli.main import main; main()", "cache", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "EDGEKIT_CACHE_DIR": str(cache)},
            timeout=60,
        )

    for args, needle in (
        (("prune", "--max-size", "lots"), "expected a size"),
        (("prune", "--area", "imports"), "has no cap"),
        (("clear", "--area", "locks"), "never pruned or cleared"),
    ):
        r = main(*args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("edgekit: error: ") and needle in r.stderr
