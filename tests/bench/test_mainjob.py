"""The main job end to end on a tiny model: plan, build, measure, pick, report; then from cache."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def run_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_main_job_on_a_tiny_model_and_rerun_from_cache(tiny_qwen3, tmp_path):
    args = [
        "quantize",
        str(tiny_qwen3),
        "--target",
        "cpu",
        "--bar",
        "kld<=0.05",
        "--out",
        str(tmp_path),
        "--json",
    ]
    d = json.loads(run_cli(*args).output)
    run_dir = next(tmp_path.iterdir())
    assert {p.name for p in run_dir.iterdir()} >= {"report.json", "report.md", "pareto.png", "artifacts"}
    statuses = {c["format"]: c["status"] for c in d["candidates"]}
    measured = [c for c in d["candidates"] if c["quality"]]
    assert 1 <= len(measured) <= 5  # 10 candidates: ceil(log2 10) + 1
    if d["pick"]:
        pick = next(c for c in d["candidates"] if c["format"] == d["pick"])
        assert pick["quality"]["kld_mean"] <= 0.05 and statuses[d["pick"]] == "pick"
        smaller = [c for c in measured if c["planned_bytes"] < pick["planned_bytes"]]
        assert all(c["quality"]["kld_mean"] > 0.05 for c in smaller)
    assert all(c["reason"] for c in d["candidates"])
    assert "KLD" in (run_dir / "report.md").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "artifacts").iterdir()}
    d2 = json.loads(run_cli(*args).output)
    assert d2["pick"] == d["pick"]
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "artifacts").iterdir()} == mtimes


def _edgekit(*args):
    return subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def _one_line(r, needle):
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_malformed_bar(tiny_qwen3, tmp_path):
    _one_line(
        _edgekit(
            "quantize", str(tiny_qwen3), "--target", "cpu", "--bar", "kld>=oops", "--out", str(tmp_path)
        ),
        "malformed quality bar",
    )
    assert not any(tmp_path.iterdir())


def test_evaluation_text_shorter_than_a_window(tiny_qwen3, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill a window.")
    out = tmp_path / "out"
    _one_line(
        _edgekit(
            "quantize", str(tiny_qwen3), "--target", "cpu", "--evaluation", str(short), "--out", str(out)
        ),
        "fewer than one window",
    )
    assert not list(out.rglob("report.*"))


def test_reference_that_cannot_be_loaded(tiny_qwen3, copy_dir, tmp_path):
    d = copy_dir(tiny_qwen3)
    (d / "model.safetensors").write_bytes(b"\x00" * 16)
    out = tmp_path / "out"
    _one_line(_edgekit("quantize", str(d), "--target", "cpu", "--out", str(out)), "safetensors")
    assert not list(out.rglob("report.*"))
    _one_line(
        _edgekit("eval", str(tmp_path / "missing.gguf"), "--reference", str(tiny_qwen3)), "missing.gguf"
    )


@pytest.mark.slow
def test_onnx_and_gguf_candidates_in_one_run(tiny_qwen3, tmp_path):
    """Candidates of two families with two runtimes (onnxruntime, llama.cpp) on one store: both
    are built, scored and reported (an ONNX manifest once lacked bits_per_weight and the run
    died at the end with a KeyError)."""
    pytest.importorskip("onnxruntime")
    args = ["quantize", str(tiny_qwen3), "--target", "cpu", "--formats", "onnx:int8,gguf:Q4_K_M"]
    args += ["--bar", "kld<=1", "--out", str(tmp_path), "--full", "--speed", "none"]
    d = json.loads(run_cli(*args, "--json").output)
    by = {c["format"]: c for c in d["candidates"]}
    assert set(by) == {"onnx:int8", "gguf:Q4_K_M"}
    assert {c["chain"] for c in by.values()} == {"onnx", "gguf (importance matrix)"}
    for f, c in by.items():  # --full: every candidate of both chains measured on every window
        assert c["quality"] and 0 < c["quality"]["kld_mean"] < 0.05, (f, c)
        assert c["artifact"]["bits_per_weight"] > 0 and c["reason"]
    assert by["onnx:int8"]["artifact"]["runtime"] == "onnxruntime"
    assert by["gguf:Q4_K_M"]["artifact"]["runtime"] == "llama.cpp"
    assert d["pick"] in by
    table = run_cli(*args).output  # the people's table renders every candidate, from the cache
    assert "onnx:int8" in table and "gguf:Q4_K_M" in table and "pick:" in table


@pytest.mark.slow
def test_speed_of_the_pick_is_measured_and_a_speed_bar_can_refuse_it(tiny_qwen3, tmp_path):
    """On this machine the pick's speed and memory are measured beside the planned figures, every
    figure marked; a speed bar no candidate meets leaves no pick, each candidate 'too slow' with
    its measured figure; a bar every candidate meets keeps the quality pick."""
    base = ["quantize", str(tiny_qwen3), "--target", "cpu", "--formats", "gguf:Q8_0,gguf:Q4_K_M"]
    base += ["--bar", "kld<=1", "--out", str(tmp_path), "--json"]
    d = json.loads(run_cli(*base).output)
    assert d["pick"] == "gguf:Q4_K_M" and d["speed_source"] == "measured"
    sp = d["pick_speed"]
    for name in ("prefill_tok_s", "decode_tok_s", "ttft_s", "peak_memory_bytes"):
        assert sp[name]["source"] == "measured" and sp[name]["value"] > 0 and sp[name]["planned"] > 0
    assert "speed" in d["phases"]
    slow = json.loads(run_cli(*base, "--speed-bar", "decode>=1000000").output)
    assert slow["pick"] is None
    by = {c["format"]: c for c in slow["candidates"]}
    assert all(c["status"] == "too slow" and "misses decode>=1000000" in c["reason"] for c in by.values())
    assert all(c["speed"]["decode_tok_s"]["source"] == "measured" for c in by.values())
    easy = json.loads(run_cli(*base, "--speed-bar", "decode>=0.01,ttft<=600").output)
    assert easy["pick"] == d["pick"] and easy["speed_bar"]["text"]


def test_speed_for_another_device_is_planned(tiny_qwen3, tmp_path):
    args = ["quantize", str(tiny_qwen3), "--target", "rtx4090", "--formats", "gguf:Q4_K_M"]
    d = json.loads(run_cli(*args, "--bar", "kld<=1", "--out", str(tmp_path), "--json").output)
    assert d["speed_source"] == "planned" and d["pick"] == "gguf:Q4_K_M"
    assert d["pick_speed"]["decode_tok_s"]["source"] == "planned"
    assert any("edgekit bench" in n for n in d["notes"])


def test_malformed_speed_bar_is_one_line_before_any_work(tiny_qwen3, tmp_path):
    r = _edgekit("quantize", str(tiny_qwen3), "--target", "cpu", "--speed-bar", "decode>=fast")
    _one_line(r, "decode>=fast")
