"""`edgekit runtimes` and `edgekit bench`: exact JSON, a table for people, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from tests.bench.bench_util import fake_run, smollm2_q4km
from tests.runtimes.test_registry import OFF, install_fake_distribution


@pytest.fixture(scope="session")
def q4km(smollm2_checkpoint, tmp_path_factory):
    return smollm2_q4km(smollm2_checkpoint, tmp_path_factory)


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_main(*args, extra_path: str | None = None):
    """The real entry point in a child process: exit codes and stderr exactly as a user sees them."""
    env = {**os.environ, "EDGEKIT_CPU_BANDWIDTH_GBS": "20"}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_runtimes_json_and_table():
    data = json.loads(run("runtimes", "--json").output)
    names = {d["name"]: d for d in data}
    assert {"llama.cpp", "transformers", "onnxruntime"} <= set(names)
    lc = names["llama.cpp"]
    assert lc["formats"] == ["gguf"] and lc["extra"] == "gguf" and "cpu" in lc["devices"]
    for d in data:
        assert d["available"] == (d["version"] is not None) and (d["available"] or d["reason"])
    out = run("runtimes").output
    assert "llama.cpp" in out and "onnxruntime" in out


def test_bench_bad_input_is_one_line(tmp_path):
    one_line_error(run_main("bench", str(tmp_path / "missing.gguf")), "no such file")
    one_line_error(run_main("bench", "no-such-model-xyz"), "unknown model")
    one_line_error(run_main("bench", str(tmp_path / "x.gguf"), "--batch", "1,zero"), "--batch")


def test_bench_wrong_runtime_for_the_format(tmp_path):
    ck = tmp_path / "tiny-llama"
    ck.mkdir()
    (ck / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 256,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
                "head_dim": 16,
            }
        )
    )
    (ck / "model.safetensors").write_bytes(b"")
    one_line_error(run_main("bench", str(ck), "--runtime", "llama.cpp"), "llama.cpp does not serve bf16")
    one_line_error(
        run_main("bench", str(ck), "--runtime", "llamacp"),
        "unknown runtime 'llamacp'",
        "did you mean: llama.cpp",
    )


def test_runtimes_lists_a_third_party_runtime_with_its_install_route(tmp_path):
    install_fake_distribution(tmp_path, {"offengine": "toy_off"}, {"toy_off": OFF})
    r = run_main("runtimes", "--json", extra_path=str(tmp_path))
    off = {d["name"]: d for d in json.loads(r.stdout)}["offengine"]
    assert not off["available"] and off["reason"] == "offlib is not installed"
    assert off["install"] == 'install it with: pip install "edgekit[offextra]"'
    assert "offengine" in run_main("runtimes", extra_path=str(tmp_path)).stdout


@pytest.mark.llamacpp
def test_bench_unavailable_runtime_on_a_real_artifact(q4km, tmp_path):
    install_fake_distribution(
        tmp_path, {"offengine": "toy_off"}, {"toy_off": OFF.replace('("bf16",)', '("gguf",)')}
    )
    one_line_error(
        run_main("bench", str(q4km), "--runtime", "offengine", "--no-save", extra_path=str(tmp_path)),
        "runtime offengine is unavailable: offlib is not installed",
        'pip install "edgekit[offextra]"',
    )


@pytest.mark.llamacpp
@pytest.mark.slow
def test_bench_json_and_table(q4km, tmp_path):
    store = tmp_path / "store"
    args = [
        "bench",
        str(q4km),
        "--prompt-tokens",
        "48",
        "--gen-tokens",
        "8",
        "--repeat",
        "2",
        "--threads",
        "2",
        "--store",
        str(store),
    ]
    r = run_main(*args, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "edgekit.bench/1" and d["runtime"]["name"] == "llama.cpp"
    b = d["batches"][0]
    assert b["measured"] and b["decode_tok_s"]["n"] == 2 and b["roofline"]["fraction"] > 0
    assert d["planner"]["predicted_over_measured"] > 0 and d["peak_rss_bytes"] > 0 and d["load_s"] > 0
    assert set(d["method"]) >= {"ttft", "decode_tok_s", "roofline", "peak_rss", "memory_ratio"}
    assert "foreign_cpu_share" in d
    r = run_main(*args, "--batch", "1,4")
    assert r.returncode == 0, r.stderr
    assert "decode tok/s" in r.stdout and "roofline" in r.stdout and "not measured" in r.stdout
    rep = json.loads(run_main("bench", "report", "--store", str(store), "--json").stdout)
    assert rep["runs"] == 2 and len(rep["devices"]) == 1 and {row["batch"] for row in rep["rows"]} == {1}


def test_bench_report_and_import(tmp_path):
    from edgekit.bench import results_store

    other = tmp_path / "h100-store"
    results_store._write(fake_run("r-h100", "h100box", "cccc", 900.0, device="cuda"), other)
    results_store._write(fake_run("r-lap", "laptop", "dddd", 60.0), tmp_path / "mine")
    out = json.loads(run("bench", "import", str(other), "--store", str(tmp_path / "mine"), "--json").output)
    assert out["added"] == 1
    rep = json.loads(run("bench", "report", "--store", str(tmp_path / "mine"), "--json").output)
    assert rep["runs"] == 2 and len(rep["devices"]) == 2 and len(rep["rows"]) == 1
    text = run("bench", "report", "--store", str(tmp_path / "mine")).output
    assert "h100box" in text and "laptop" in text and "900" in text
    assert "no results" in run("bench", "report", "--store", str(tmp_path / "empty")).output
