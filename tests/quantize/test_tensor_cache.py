"""The quantized-tensor cache (edgekit.quantize.tensor_cache): a GGUF built with the cache
cold, warm or off is the same file; a damaged entry is rebuilt, never used; the cap removes
the least recently used entries; two processes share one cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache directory of this test's own; the tensor cache at its default cap."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(d))
    monkeypatch.delenv("EDGEKIT_TENSOR_CACHE_MAX", raising=False)
    return d


def _checkpoint(path):
    from edgekit.models.source import _local

    return _local(Path(path), origin="local")


def _imatrix(ck) -> dict:
    """Positive per-column importances for every matrix, shaped as importance_matrix() gives
    them (flat, experts one after another)."""
    import json

    import numpy as np

    from edgekit.models.weights import SafetensorsCheckpoint
    from edgekit.quantize.gguf import plan_tensors

    w = SafetensorsCheckpoint(ck.safetensors_files())
    try:
        planned = plan_tensors(w, ck.entry.arch, json.loads((ck.path / "config.json").read_text()))
    finally:
        w.close()
    rng = np.random.default_rng(0)
    out = {}
    for p in planned:
        if len(p.gguf_shape) >= 2 and p.layer >= 0:
            n_mats = p.gguf_shape[2] if len(p.gguf_shape) == 3 else 1
            out[p.name] = rng.uniform(0.1, 4.0, n_mats * p.gguf_shape[0]).astype(np.float32)
    return out


def _build(ck, mix, out: Path, imatrix=None, cap: str | None = None):
    """(sha256 of the GGUF, the cache's counts or None when it was off)."""
    from edgekit.quantize.gguf import Recipe, convert

    old = os.environ.get("EDGEKIT_TENSOR_CACHE_MAX")
    if cap is not None:
        os.environ["EDGEKIT_TENSOR_CACHE_MAX"] = cap
    try:
        r = convert(ck, out, Recipe(mix=mix, imatrix=imatrix))
    finally:
        if cap is not None:
            if old is None:
                os.environ.pop("EDGEKIT_TENSOR_CACHE_MAX")
            else:
                os.environ["EDGEKIT_TENSOR_CACHE_MAX"] = old
    return hashlib.sha256(out.read_bytes()).hexdigest(), r.tensor_cache


def _entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "tensors").glob("*.tensor"))


@pytest.mark.parametrize("model", ["tiny_qwen3", "tiny_qwen3_moe"])
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["no-imatrix", "imatrix"])
def test_same_bytes_with_the_cache_cold_warm_and_off(request, cache, tmp_path, model, with_imatrix):
    ck = _checkpoint(request.getfixturevalue(model))
    imat = _imatrix(ck) if with_imatrix else None
    off_s, none = _build(ck, "Q4_K_S", tmp_path / "off-s.gguf", imat, cap="off")
    off_m, _ = _build(ck, "Q4_K_M", tmp_path / "off-m.gguf", imat, cap="0")
    assert none is None and not (cache / "tensors").exists()

    cold_s, st = _build(ck, "Q4_K_S", tmp_path / "cold-s.gguf", imat)
    assert cold_s == off_s
    assert st.hits == 0 and st.misses > 0 and st.damaged == st.write_errors == 0
    n_entries = len(_entries(cache))
    assert n_entries > 0
    # a second candidate: the tensors that keep their type come from the cache
    warm_m, st_m = _build(ck, "Q4_K_M", tmp_path / "warm-m.gguf", imat)
    assert warm_m == off_m
    assert st_m.hits > 0 and st_m.misses > 0
    assert len(_entries(cache)) == n_entries + st_m.misses
    again, st_again = _build(ck, "Q4_K_M", tmp_path / "again-m.gguf", imat)
    assert again == off_m
    assert st_again.misses == 0 and st_again.hits == st_m.hits + st_m.misses
    assert not [p for p in (cache / "tensors").iterdir() if p.suffix != ".tensor"]


def test_an_importance_matrix_is_part_of_the_key(cache, tiny_qwen3, tmp_path):
    import numpy as np

    ck = _checkpoint(tiny_qwen3)
    imat = _imatrix(ck)
    _, plain = _build(ck, "Q4_K_M", tmp_path / "a.gguf")
    _, st = _build(ck, "Q4_K_M", tmp_path / "b.gguf", imat)
    # only the two matrices the importances leave out (token_embd, output) are the same entries
    assert (st.hits, st.misses) == (2, plain.misses - 2)
    other = {k: (v * np.float32(1.5)) for k, v in imat.items()}
    _, st = _build(ck, "Q4_K_M", tmp_path / "c.gguf", other)
    assert (st.hits, st.misses) == (2, plain.misses - 2)
    _, st = _build(ck, "Q4_K_M", tmp_path / "d.gguf", imat)
    assert st.misses == 0


def test_q8_0_takes_no_importance_so_its_key_has_none():
    """The fact IMATRIX_IGNORED rests on, from ggml itself."""
    import numpy as np

    from edgekit.quantize.ggml_lib import quantize_rows
    from edgekit.quantize.tensor_cache import IMATRIX_IGNORED

    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    imat = rng.uniform(0.01, 100, 256).astype(np.float32)
    for ty in IMATRIX_IGNORED:
        assert quantize_rows(x, ty, imat).tobytes() == quantize_rows(x, ty, None).tobytes()
    # and one that does weigh them, so the comparison can tell
    assert quantize_rows(x, "Q4_K", imat).tobytes() != quantize_rows(x, "Q4_K", None).tobytes()


def test_key_is_the_rows_not_their_slicing(cache):
    import numpy as np

    from edgekit.quantize.tensor_cache import open_cache

    c = open_cache()
    assert c is not None
    x = np.arange(4 * 512, dtype=np.float32).reshape(4, 512)

    def key(ty, chunks, imat=None):
        return c.key(ty, imat, chunks, lambda: [])[0]

    whole = key("Q4_K", [(0, x)])
    assert key("Q4_K", [(0, x[:1]), (0, x[1:])]) == whole
    assert key("Q4_K", [(0, x.astype(np.float64))]) == whole  # as fed: float32
    assert key("Q5_K", [(0, x)]) != whole
    assert key("Q4_K", [(0, x.reshape(8, 256))]) != whole  # another row length
    assert key("Q4_K", [(0, x[:2]), (1, x[2:])]) != whole  # an expert starts at row 2
    assert key("Q4_K", [(0, x)], np.ones(512, np.float32)) != whole
    y = x.copy()
    y[3, 7] += 1
    assert key("Q4_K", [(0, y)]) != whole
    # rows kept for the miss are the ones hashed; past the buffer they are read again
    k, rows = c.key("Q4_K", None, [(0, x)], lambda: ["again"])
    assert k == whole and np.array_equal(rows[0][1], x)


def test_damaged_entries_are_rebuilt_never_used(cache, tiny_qwen3, tmp_path):
    ck = _checkpoint(tiny_qwen3)
    good, st = _build(ck, "Q4_K_M", tmp_path / "a.gguf")
    entries = _entries(cache)
    assert len(entries) == st.misses >= 3
    flipped, truncated, sealless = entries[0], entries[1], entries[2]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0x10
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    sealless.write_bytes(sealless.read_bytes()[:-36] + b"\0" * 36)  # bytes whole, seal gone
    again, st2 = _build(ck, "Q4_K_M", tmp_path / "b.gguf")
    assert again == good
    assert st2.damaged == 3 and st2.misses == 3 and st2.hits == st.misses - 3
    third, st3 = _build(ck, "Q4_K_M", tmp_path / "c.gguf")
    assert third == good and st3.hits == st.misses and st3.damaged == 0


def test_the_cap_keeps_the_area_small_by_removing_least_recently_used(cache, tiny_qwen3, tmp_path):
    from edgekit import cache_areas

    ck = _checkpoint(tiny_qwen3)
    off, _ = _build(ck, "Q4_K_M", tmp_path / "off.gguf", cap="off")
    _build(ck, "Q4_K_S", tmp_path / "s.gguf")
    held = cache_areas.summary("tensors").bytes
    cap = held // 2
    got, st = _build(ck, "Q4_K_M", tmp_path / "m.gguf", cap=str(cap))
    assert got == off
    assert st.pruned > 0
    assert cache_areas.summary("tensors").bytes <= cap


def test_prune_removes_least_recently_used_first_and_old_leftovers(cache):
    from edgekit import cache_areas

    area = cache / "tensors"
    area.mkdir(parents=True)
    now = time.time()
    for i in range(6):
        p = area / f"{i}.tensor"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - 1000 + i * 100, now - 1000 + i * 100))  # 0 is the least recent
    young = area / ".5.tensor.abc.part"  # a running writer's
    young.write_bytes(b"y" * 10)
    old = area / ".1.tensor.def.part"  # a killed process left it
    old.write_bytes(b"z" * 10)
    os.utime(old, (now - 2 * cache_areas.STAGING_GRACE_S,) * 2)
    (done,) = cache_areas.prune(["tensors"], 3000)
    left = sorted(p.name for p in area.iterdir())
    assert left == [".5.tensor.abc.part", "3.tensor", "4.tensor", "5.tensor"]
    assert (done.removed, done.freed_bytes) == (4, 3010)
    assert (done.entries, done.bytes) == (4, 3010)


def test_two_processes_share_one_cache(cache, tiny_qwen3, tmp_path):
    ck = _checkpoint(tiny_qwen3)
    off, _ = _build(ck, "Q4_K_M", tmp_path / "off.gguf", cap="off")
    code = (
        "import sys; from pathlib import Path; from edgekit.models.source import _local; "
        "from edgekit.quantize.gguf import Recipe, convert; "
        "convert(_local(Path(sys.argv[1]), origin='local'), Path(sys.argv[2]), Recipe(mix='Q4_K_M'))"
    )
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tiny_qwen3), str(tmp_path / f"p{i}.gguf")], env=env)
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for i in range(2):
        assert hashlib.sha256((tmp_path / f"p{i}.gguf").read_bytes()).hexdigest() == off
    assert not [p for p in (cache / "tensors").iterdir() if p.suffix != ".tensor"]
    got, st = _build(ck, "Q4_K_M", tmp_path / "after.gguf")
    assert got == off and st.misses == 0 and st.damaged == 0


def test_a_cache_that_cannot_be_made_is_skipped(cache, tiny_qwen3, tmp_path):
    ck = _checkpoint(tiny_qwen3)
    off, _ = _build(ck, "Q4_K_S", tmp_path / "off.gguf", cap="off")
    cache.mkdir(parents=True)
    (cache / "tensors").write_text("not a directory")
    got, st = _build(ck, "Q4_K_S", tmp_path / "a.gguf")
    assert got == off and st is None


def test_the_build_reports_the_cache_in_its_manifest(cache, tiny_qwen3, tmp_path):
    from edgekit.quantize.gguf_build import build_gguf

    ck = _checkpoint(tiny_qwen3)
    build_gguf(ck, "Q4_K_S", tmp_path / "out", imatrix="none")
    art = build_gguf(ck, "Q4_K_M", tmp_path / "out", imatrix="none")
    tc = art.manifest.details["tensor_cache"]
    assert tc["hits"] > 0 and tc["misses"] > 0
    assert tc["hit_rate"] == round(tc["hits"] / (tc["hits"] + tc["misses"]), 4)


def test_the_cap_setting(cache, monkeypatch):
    import shutil

    from edgekit import cache_areas
    from edgekit.errors import EdgekitError
    from edgekit.quantize import tensor_cache as tc

    assert cache_areas.parse_size("8G") == 8 * 1024**3
    assert cache_areas.parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert cache_areas.parse_size("500MB") == 500 * 1000**2
    assert cache_areas.parse_size("123") == 123
    for bad in ("lots", "-1G", "5 X", "1ib"):
        with pytest.raises(EdgekitError, match="expected a size"):
            cache_areas.parse_size(bad)
    monkeypatch.setenv("EDGEKIT_TENSOR_CACHE_MAX", "64M")
    assert tc.configured_max() == 64 * 1024**2
    for off in ("0", "off", "OFF"):
        monkeypatch.setenv("EDGEKIT_TENSOR_CACHE_MAX", off)
        assert tc.configured_max() is None and tc.open_cache() is None
    monkeypatch.delenv("EDGEKIT_TENSOR_CACHE_MAX")
    free = shutil.disk_usage(cache.parent).free
    assert 0 < tc.configured_max() <= min(20 * 1024**3, 0.101 * free)
