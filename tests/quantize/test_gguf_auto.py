"""gguf:auto@BUDGET: a measured mix under a byte budget (edgekit.quantize.gguf_auto and
edgekit.quantize.sensitivity) on the tiny Qwen3 and Qwen3-MoE."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.quantize.gguf_auto import Budget, parse_budget

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


@pytest.mark.parametrize(
    "text, want",
    [
        ("4.9bpw", Budget("4.9bpw", bpw=4.9)),
        ("6.1655BPW", Budget("6.1655bpw", bpw=6.1655)),
        ("105454240", Budget("105454240", file_bytes=105454240)),
        ("1200000b", Budget("1200000", file_bytes=1200000)),
        ("110MiB", Budget("110mib", file_bytes=110 * 1024**2)),
        ("0.5GB", Budget("0.5gb", file_bytes=500_000_000)),
        ("5gib", Budget("5gib", file_bytes=5 * 1024**3)),
    ],
)
def test_budget_spellings(text, want):
    b = parse_budget(text)
    assert b == want
    assert parse_budget(b.spelling) == b  # the format id's spelling parses back to the budget


@pytest.mark.parametrize("text", ["", "abc", "4.9 bits", "-3bpw", "0bpw", "1e6", "1.5b", "5tib"])
def test_bad_budget_spellings_are_refused(text):
    with pytest.raises(EdgekitError) as e:
        parse_budget(text)
    assert "\n" not in str(e.value)


def _edgekit(*args):
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize(
    "budget, needle",
    [
        ("0.5bpw", "is below what any mix reaches"),
        ("20bpw", "is above F16"),
        ("64KiB", "is below what any mix reaches"),
        ("1GiB", "is above F16"),
        ("nonsense", "expected bits per weight or a file size"),
    ],
)
def test_unreachable_budget_is_one_line_naming_the_range(budget, needle, tiny_qwen3, tmp_path):
    out = tmp_path / "out"
    r = _edgekit("quantize", str(tiny_qwen3), "--format", f"gguf:auto@{budget}", "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
    if "any mix" in needle or "F16" in needle:  # the range, in bits per weight and bytes
        assert re.search(r"span \d+\.\d\d-\d+\.\d\d bits per weight \(\d+\.\d MiB-\d+\.\d MiB\)", lines[0])
    assert not out.exists()


def _build(ck_dir: Path, spec: str, out: Path, force: bool = False):
    from edgekit.formats import BuildOptions, build, get_format
    from edgekit.models.source import open_checkpoint

    return build(open_checkpoint(str(ck_dir)), get_format(spec), out, BuildOptions(force=force))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, budget",
    [
        ("tiny_qwen3", "3.2bpw"),
        ("tiny_qwen3", "5bpw"),
        ("tiny_qwen3", "1100000"),
        ("tiny_qwen3_moe", "4.5bpw"),
    ],
)
def test_auto_lands_within_one_percent_of_the_budget_and_loads(name, budget, request, tmp_path, monkeypatch):
    import numpy as np

    from edgekit.quantize import gguf_auto
    from edgekit.runtimes import llamacpp
    from edgekit.text import default_evaluation_text

    if name == "tiny_qwen3_moe":  # the CI budget: a slice of one short window measures the experts too
        monkeypatch.setattr(gguf_auto, "WINDOW", 128)
        monkeypatch.setattr(gguf_auto, "WINDOWS", 1)
    art = _build(request.getfixturevalue(name), f"gguf:auto@{budget}", tmp_path)
    m = art.manifest
    b = parse_budget(budget)
    if b.bpw is not None:
        assert 0.99 * b.bpw <= m.bits_per_weight <= b.bpw, m.bits_per_weight
    else:
        assert b.file_bytes is not None
        assert 0.99 * b.file_bytes <= m.size_bytes <= b.file_bytes, m.size_bytes
    assert m.size_bytes == art.path.stat().st_size
    sens = m.details["sensitivity"]
    assert sens["evaluations"] > 0 and sens["positions"] > 0 and sens["wall_seconds"] >= 0
    # only standard ggml types, in a file llama.cpp loads and runs
    types = {t["type"] for t in m.details["tensors"]}
    assert types <= {
        "F32",
        "F16",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_0",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
    }
    assert len(types - {"F32"}) >= 2  # a mix, not one type
    session = llamacpp.load(art.path, n_ctx=128)
    try:
        ids = session.tokenize(default_evaluation_text())[:64]
        logits = np.asarray(session.logits(ids))
    finally:
        session.close()
    assert logits.shape[0] == len(ids) and np.isfinite(logits).all()


def test_auto_is_deterministic_and_its_recipe_reproduces_it(tiny_qwen3, tmp_path):
    """Measured afresh (the sensitivity cache removed) the same mix and the same bytes; the
    manifest's llama-quantize command with the recipe beside the file gives them too."""
    from edgekit.paths import cache_dir
    from tests.quantize.test_gguf_recipe import _llama_quantize

    one = _build(tiny_qwen3, "gguf:auto@4.5bpw", tmp_path / "a")
    # another budget shares the measurement (it does not depend on the budget)
    other = _build(tiny_qwen3, "gguf:auto@3.5bpw", tmp_path / "c").manifest.details["sensitivity"]
    assert other["cached"] and other["evaluations"] == one.manifest.details["sensitivity"]["evaluations"]
    shutil.rmtree(cache_dir() / "sensitivity", ignore_errors=True)
    two = _build(tiny_qwen3, "gguf:auto@4.5bpw", tmp_path / "b", force=True)
    assert one.manifest.sha256 == two.manifest.sha256 == _sha(two.path)
    r1, r2 = one.manifest.recipe, two.manifest.recipe
    recipe = tmp_path / "a" / r1["tensor_type_file"]
    assert recipe.read_text() == (tmp_path / "b" / r2["tensor_type_file"]).read_text()
    assert json.dumps(one.manifest.details["tensors"]) == json.dumps(two.manifest.details["tensors"])

    exe, env = _llama_quantize()
    from edgekit.models.source import open_checkpoint
    from edgekit.quantize.unquantized import reference_gguf

    ref = reference_gguf(open_checkpoint(str(tiny_qwen3)))
    words = r1["reproduce"].split()
    assert words[0] == "llama-quantize" and words[-3] == ref.name and words[-2] == one.path.name
    shutil.copy(ref, tmp_path / "a" / ref.name)
    (tmp_path / "a" / one.path.name).rename(tmp_path / "a" / "edgekit.gguf")
    cmd = [str(exe), *words[1:], "2"]
    p = subprocess.run(cmd, cwd=tmp_path / "a", env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert _sha(tmp_path / "a" / one.path.name) == one.manifest.sha256


def test_sensitivity_groups_are_roles_over_spans_of_layers():
    from edgekit.models.arch import Tensor
    from edgekit.quantize.gguf_auto import probes, sensitivity_groups

    q = [Tensor("token_embd.weight", (576, 1000), "embed")]
    for layer in range(30):
        for role in ("attn_q", "ffn_down", "ffn_gate_exps"):
            q.append(Tensor(f"blk.{layer}.{role}.weight", (512, 256, 8), "", layer))
    g = sensitivity_groups(q)
    assert g["token_embd.weight"] == ["token_embd.weight"]
    assert sorted(k for k in g if k.endswith("attn_q.weight")) == [
        "blk.0-6.attn_q.weight",
        "blk.15-21.attn_q.weight",
        "blk.22-29.attn_q.weight",
        "blk.7-14.attn_q.weight",
    ]
    assert g["blk.22-29.ffn_gate_exps.weight"] == [f"blk.{i}.ffn_gate_exps.weight" for i in range(22, 30)]
    assert sorted(n for ns in g.values() for n in ns) == sorted(t.name for t in q)  # each once
    assert probes(q[0]) == ["Q4_0", "Q5_0"] and probes(q[1]) == ["Q3_K", "Q5_K"]
