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
