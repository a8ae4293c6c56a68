"""vLLM launch planning (no vLLM needed): layouts of published cases (vLLM #25292, Qwen3 FP8
releases), memory per GPU, the exact commands, and the dry-run CLI."""

import json
import shlex

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import EdgekitError
from edgekit.runtimes.vllm_launch import launch_plan


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_235b_bf16_on_8xh100_is_tensor_parallel_8_with_experts_whole():
    lp = launch_plan("qwen3-235b-a22b", "8xh100", "bf16", ctx=32768)
    assert lp.layout["tp"] == 8 and lp.layout["pp"] == 1 and lp.fits
    assert _flag(lp.serve, "--tensor-parallel-size") == "8" and "--enable-expert-parallel" in lp.serve
    assert lp.serve[:3] == ["vllm", "serve", "Qwen/Qwen3-235B-A22B"]
    assert any("replicated 2x" in n for n in lp.notes)  # 4 KV heads, TP 8
    g = lp.per_gpu
    assert (
        g["usable"] == int(0.90 * g["capacity"])
        and g["kv_budget"] == g["usable"] - g["weights"] - g["non_kv_overhead"]
    )


@pytest.mark.parametrize(
    ("model", "target", "per_expert"), [("qwen3-30b-a3b", "4xh100", 192), ("qwen3-235b-a22b", "8xh100", 192)]
)
def test_fp8_block_checkpoints_switch_to_expert_parallel(model, target, per_expert):
    lp = launch_plan(model, target, "fp8:block128")
    assert lp.layout["ep"] == lp.layout["tp"] > 1
    assert any(f"{per_expert} rows" in n for n in lp.notes)
    assert lp.serve[2].startswith("artifacts/") and "--enable-expert-parallel" in lp.serve


def test_235b_fp8_on_4xh100_and_30b_on_one_h100():
    assert launch_plan("qwen3-235b-a22b", "4xh100", "fp8:dynamic", ctx=8192).fits
    one = launch_plan("qwen3-30b-a3b", "h100", "bf16", ctx=8192)
    assert one.layout["strategy"] == "single" and one.fits and "--enable-expert-parallel" not in one.serve
    assert not launch_plan("qwen3-235b-a22b", "h100", "bf16", ctx=8192).fits


@pytest.mark.parametrize("fmt", ["gptq:w4g128", "awq:w4g128"])
def test_30b_a3b_on_an_rtx4090_fits_at_4_bit_only(fmt):
    q4 = launch_plan("qwen3-30b-a3b", "rtx4090", fmt, ctx=8192)
    assert q4.layout["strategy"] == "single" and q4.fits
    g = q4.per_gpu
    # ~30.5 B parameters at 4 bits with group scales, embeddings and router unquantized: 15-17 GiB
    assert 15 * 2**30 < g["weights"] < 17 * 2**30
    assert g["kv_tokens"] >= 8192 and g["concurrent_full_sequences"] >= 1
    assert _flag(q4.serve, "--max-model-len") == "8192" and q4.serve[2].endswith(fmt.replace(":", "-"))
    bf16 = launch_plan("qwen3-30b-a3b", "rtx4090", "bf16", ctx=8192)
    assert not bf16.fits and bf16.per_gpu["kv_budget"] == 0
    assert any("exceed the usable memory" in n for n in bf16.notes)


def test_memory_utilisation_moves_only_the_kv_budget():
    a = launch_plan("qwen3-8b", "h100", "bf16", ctx=32768, gpu_memory_utilization=0.90)
    b = launch_plan("qwen3-8b", "h100", "bf16", ctx=32768, gpu_memory_utilization=0.50)
    assert a.per_gpu["weights"] == b.per_gpu["weights"]
    assert a.per_gpu["kv_budget"] - b.per_gpu["kv_budget"] == a.per_gpu["usable"] - b.per_gpu["usable"]
    assert _flag(b.serve, "--gpu-memory-utilization") == "0.50"


def test_two_nodes_keep_tensor_parallel_inside_a_node_and_use_ray():
    lp = launch_plan("qwen3-235b-a22b", "16xh100", "bf16")
    assert lp.nodes == 2 and lp.layout["tp"] == 8 and lp.layout["pp"] == 2
    assert _flag(lp.serve, "--distributed-executor-backend") == "ray"
    assert len(lp.ray) == 2 and lp.ray[0].startswith("ray start --head")


def test_refusals():
    with pytest.raises(EdgekitError, match="GPUs"):
        launch_plan("qwen3-8b", "cpu")
    with pytest.raises(EdgekitError, match="does not serve"):
        launch_plan("qwen3-8b", "h100", "gguf:Q4_K_M")


def test_dry_run_cli_json_and_errors(capsys):
    r = CliRunner().invoke(
        cli, ["bench", "qwen3-235b-a22b", "--runtime", "vllm", "--target", "8xh100", "--dry-run", "--json"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert shlex.split(d["serve_command"]) == d["serve"] and d["layout"]["tp"] == 8
    from edgekit.cli.main import main

    for args, needle in (
        (["--runtime", "vllm", "--target", "cpu", "--dry-run"], "GPUs"),
        (["--runtime", "vllm", "--target", "h100", "--dry-run", "--format", "gguf:Q4_K_M"], "does not serve"),
        (["--target", "h100", "--dry-run"], "--runtime vllm"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["bench", "qwen3-8b", *args])
        assert e.value.code == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and needle in err[0], err
