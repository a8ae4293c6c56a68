import json

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def test_quantize_json_manifest_and_cache(tiny_qwen3, tmp_path):
    args = ["quantize", str(tiny_qwen3), "--format", "gguf:Q4_K_M", "--out", str(tmp_path), "--json"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    d = json.loads(r.output)
    assert d["format"] == "gguf:Q4_K_M" and d["size_bytes"] > 0 and len(d["sha256"]) == 64
    assert d["tensor_types"]["Q6_K"] >= 1 and d["recipe"]["imatrix"].endswith(".imatrix.gguf")
    assert (tmp_path / d["recipe"]["imatrix"]).is_file()
    assert d["source"]["revision"].startswith("local-") and d["tool_versions"]["llama-cpp-python"]
    manifest = json.loads((tmp_path / (d["file"] + ".manifest.json")).read_text())
    assert manifest["sha256"] == d["sha256"] and len(manifest["tensors"]) > 10
    # a second run finds the finished artifact and does not rebuild it
    mtime = (tmp_path / d["file"]).stat().st_mtime_ns
    CliRunner().invoke(cli, args, catch_exceptions=False)
    assert (tmp_path / d["file"]).stat().st_mtime_ns == mtime


def test_quantize_overrides_reach_the_file(tiny_qwen3, tmp_path):
    args = [
        "quantize",
        str(tiny_qwen3),
        "--format",
        "gguf:Q4_K_M",
        "--imatrix",
        "none",
        "--tensor-type",
        "ffn_up=Q8_0",
        "--out",
        str(tmp_path),
        "--json",
    ]
    d = json.loads(CliRunner().invoke(cli, args, catch_exceptions=False).output)
    m = json.loads((tmp_path / (d["file"] + ".manifest.json")).read_text())
    types = {t["name"]: t["type"] for t in m["tensors"]}
    assert types["blk.0.ffn_up.weight"] == "Q8_0" and types["blk.0.ffn_gate.weight"] == "Q4_K"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["dbrx", "--format", "gguf:Q4_K_M"], "no GGUF converter for dbrx"),
        (["gemma-2-9b", "--format", "gptq:w4g128"], "not available for architecture 'gemma2'"),
        (["dbrx", "--target", "cpu"], "its reference"),
        (["qwen3-8b", "--format", "gguf:Q9_9"], "unknown format 'gguf:Q9_9'"),
    ],
)
def test_what_cannot_be_built_is_refused_before_any_download(args, needle, tmp_path):
    """Offline, a download would fail with another message: the refusal comes first, and
    nothing is written."""
    r = _edgekit("quantize", *args, "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert not (tmp_path / "out").exists()


def test_a_local_checkpoint_is_refused_from_its_config(tmp_path):
    d = tmp_path / "smol"
    d.mkdir()
    cfg = {"model_type": "smollm3", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
    cfg |= {"intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 256}
    (d / "config.json").write_text(json.dumps(cfg))  # no weights: opening it would fail otherwise
    r = _edgekit("quantize", str(d), "--format", "gguf:Q8_0", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "no GGUF converter for smollm3" in r.stderr, r.stderr


def _edgekit(*args):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_a_gguf_of_an_unsupported_architecture_is_refused_from_its_metadata(tmp_path):
    """Read from the header alone: no import (which would dequantize through transformers)."""
    from tests.models.test_gguf_arch import tiny, write_gguf

    want = tiny("smollm3", n_heads=4, n_kv_heads=4, max_context=4096)

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(4)

    path = write_gguf(tmp_path / "smollm3.gguf", "smollm3", want, meta)
    r = _edgekit("quantize", str(path), "--format", "gguf:Q4_K_M", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "no GGUF converter for smollm3" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
