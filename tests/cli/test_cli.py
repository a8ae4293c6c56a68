"""The CLI: JSON shape of every command, one-line errors with exit code 2, no heavy imports."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli, main


def run(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r


def run_main(*args):
    """The real entry point in a child process: exit codes and stderr exactly as a user sees them."""
    env = {**os.environ, "EDGEKIT_CPU_BANDWIDTH_GBS": "20"}
    return subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_models_json():
    r = run("models", "--json")
    data = json.loads(r.output)
    names = {d["name"] for d in data}
    assert "qwen3-8b" in names and "smollm2-135m" in names
    d = next(x for x in data if x["name"] == "qwen3-30b-a3b")
    assert d["moe"] and d["params_active"] < d["params_total"]
    assert set(d["license"]) >= {"name", "tier", "conditions"}
    assert set(d["arch"]) >= {"n_layers", "head_dim", "n_experts"}


def test_models_show_json_and_text():
    d = json.loads(run("models", "show", "llama-3.1-8b", "--json").output)
    assert d["kv_bytes_per_token_bf16"] == 131072 and d["license"]["tier"] == "conditional"
    assert any(f["format"] == "gguf:Q4_K_M" for f in d["formats"])
    out = run("models", "show", "qwen3-30b-a3b").output
    assert "active per token" in out and "Apache-2.0" in out


def test_targets_json(monkeypatch):
    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "20")
    data = json.loads(run("targets", "--json").output)
    assert {"rtx4090", "h100-sxm", "h100-pcie", "h200", "cpu"} <= {t["name"] for t in data}
    d = json.loads(run("targets", "show", "2xrtx4090", "--json").output)
    assert d["count"] == 2 and d["formats"]["fp8:dynamic"]["level"] == "native"


def test_plan_json_shape():
    d = json.loads(run("plan", "qwen3-8b", "--target", "rtx4090", "--ctx", "32768", "--json").output)
    assert d["ctx"] == 32768 and d["target"]["name"] == "rtx4090" and "method" in d
    row = d["rows"][0]
    assert set(row) >= {
        "format",
        "runtime",
        "weights_bytes",
        "kv_bytes",
        "per_device",
        "fits",
        "max_context",
        "decode_tok_s",
        "prefill_tok_s",
        "layout",
        "miss_bytes",
    }
    assert set(row["per_device"]) == {"weights", "kv_cache", "overhead", "capacity", "total", "headroom"}


def test_plan_text_nothing_fits():
    out = run("plan", "qwen3-235b-a22b", "--target", "rtx4090").output
    assert "Nothing fits" in out


def test_plan_on_local_config(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen3",
                "num_hidden_layers": 2,
                "hidden_size": 256,
                "intermediate_size": 512,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 64,
                "vocab_size": 1024,
                "tie_word_embeddings": True,
                "max_position_embeddings": 2048,
            }
        )
    )
    d = json.loads(run("plan", str(tmp_path), "--target", "h100", "--json").output)
    assert d["model"]["source"].endswith("config.json") and all(r["fits"] for r in d["rows"])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["plan", "qwen3-9b", "--target", "rtx4090"], "qwen3-8b"),
        (["plan", "qwen3-8b", "--target", "rtx4080"], "rtx4090"),
        (["models", "show", "lama-3.1-8b"], "llama-3.1-8b"),
        (["plan", "qwen3-8b", "--target", "rtx4090", "--formats", "gguf:Q9"], "unknown format"),
    ],
)
def test_bad_names_give_one_line_and_exit_2(args, needle):
    r = run_main(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_malformed_config_names_file_and_key(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3", "hidden_size": "big"}')
    r = run_main("plan", str(tmp_path), "--target", "h100")
    assert r.returncode == 2 and "config.json" in r.stderr and "hidden_size" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_malformed_target_file_names_file_and_key(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "mine.toml").write_text('name = "mine"\nkind = "gpu"\nmemory_gib = "x"\n')
    env = {**os.environ, "EDGEKIT_CONFIG_DIR": str(tmp_path)}
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgekit.cli.main import main; main()",
            "plan",
            "qwen3-8b",
            "--target",
            "h100",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2 and "mine.toml" in r.stderr and "memory_gib" in r.stderr


def test_planner_and_catalogue_import_nothing_heavy():
    code = (
        "import sys\n"
        "from edgekit.cli.main import cli\n"
        "from edgekit.plan import plan\nfrom edgekit.models import get\n"
        "from edgekit.profiles.target import get_target\n"
        "plan(get('qwen3-8b'), get_target('rtx4090'), ctx=32768)\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'gguf', 'numpy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_version_and_help():
    assert run("--version").output.startswith("edgekit")
    assert "plan" in run("--help").output


def test_main_exit_code_zero(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["models", "show", "qwen3-8b", "--json"])
    assert ei.value.code == 0


def test_models_show_says_what_edgekit_can_build_of_a_model():
    import json

    from click.testing import CliRunner

    from edgekit.cli.main import cli

    def builds(name):
        r = CliRunner().invoke(cli, ["models", "show", name, "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["builds"]

    smol, dbrx = builds("smollm2-135m"), builds("dbrx")
    assert smol["gguf"]["buildable"] and smol["gguf"]["runtime_cpu"] == "llama.cpp"
    assert smol["bf16"]["reference"] and not smol["bf16"]["buildable"]
    assert not dbrx["gguf"]["buildable"] and "no GGUF converter for dbrx" in dbrx["gguf"]["reason"]
    assert not dbrx["onnx"]["buildable"] and not dbrx["gptq"]["buildable"]
