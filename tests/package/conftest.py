"""Artifacts for the packaging tests: the SmolLM2 GGUF and the tiny Qwen3 GGUF, built once per
session (Q8_0, no importance matrix), a hand-made GGUF for the cheap tests, and a fake Ollama
server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

NO_OLLAMA = "no ollama binary can be installed on these machines"
needs_ollama = pytest.mark.skipif(shutil.which("ollama") is None, reason=NO_OLLAMA)


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs {module} (pip install -e '.[all]')")


def _build(checkpoint, out: Path) -> Path:
    _need("llama_cpp")
    from edgekit.quantize.gguf_build import build_gguf

    return build_gguf(checkpoint, "Q8_0", out, imatrix="none").path


@pytest.fixture(scope="session")
def smollm2_artifact(smollm2_checkpoint, tmp_path_factory) -> Path:
    return _build(smollm2_checkpoint, tmp_path_factory.mktemp("smollm2-artifact"))


def real_template(name: str) -> str | None:
    """A published chat template from the reference llama.cpp tree `make setup` installs
    (models/templates/NAME.jinja), or None where it is not installed."""
    import os
    import sys

    for root in (
        os.environ.get("EDGEKIT_LLAMACPP_SRC", ""),
        str(Path(sys.prefix) / "share" / "llama.cpp-convert"),
    ):
        f = Path(root) / "models" / "templates" / f"{name}.jinja"
        if root and f.is_file():
            return f.read_text()
    return None


@pytest.fixture(scope="session")
def qwen3_artifact(tiny_qwen3, tmp_path_factory) -> Path:
    """The tiny Qwen3 with Qwen3's published chat template (the tiny tokenizer's own is a
    stand-in the conformance gate rightly refuses)."""
    from edgekit.models.source import open_checkpoint

    template = real_template("Qwen-Qwen3-0.6B")
    if template is None:
        pytest.skip("the reference llama.cpp tree (make setup) is not installed")
    ckpt = tmp_path_factory.mktemp("qwen3-checkpoint") / "tiny-qwen3"
    shutil.copytree(tiny_qwen3, ckpt)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
    return _build(open_checkpoint(str(ckpt)), tmp_path_factory.mktemp("qwen3-artifact"))


@pytest.fixture
def artifact_copy(tmp_path):
    """A private copy (with its manifest) for tests that damage what they package."""

    def _copy(artifact: Path) -> Path:
        d = tmp_path / "own-artifact"
        d.mkdir(exist_ok=True)
        for f in (artifact, artifact.with_name(artifact.name + ".manifest.json")):
            shutil.copyfile(f, d / f.name)
        return d / artifact.name

    return _copy


CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c"]


def write_gguf(path: Path, arch: str = "llama", tokens=None, chat_template: str | None = None) -> Path:
    """A small but whole GGUF: architecture, vocabulary, one tensor."""
    import gguf
    import numpy as np

    tokens = list(tokens or CHATML_TOKENS)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("hand-made")
    w.add_file_type(7)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_eos_token_id(tokens.index("<|im_end|>") if "<|im_end|>" in tokens else 0)
    if chat_template:
        w.add_chat_template(chat_template)
    w.add_tensor("token_embd.weight", np.arange(len(tokens) * 8, dtype=np.float32).reshape(len(tokens), 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    d = tmp_path / "artifacts"
    d.mkdir()
    return write_gguf(d / "hand-made.gguf")


class FakeOllama:
    """Just enough of Ollama's HTTP API: /api/version, HEAD and POST /api/blobs/sha256:<hex>
    (the body must hash to the digest), and POST /api/create (every file must be an uploaded blob)."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.creates: list[dict] = []
        self.refuse_create: str | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_GET(self):
                fake.requests.append(("GET", self.path))
                self._send(200, {"version": "0.0.0-fake"}) if self.path == "/api/version" else self._send(
                    404, {}
                )

            def do_HEAD(self):
                fake.requests.append(("HEAD", self.path))
                digest = self.path.removeprefix("/api/blobs/")
                self._send(200 if digest in fake.blobs else 404)

            def do_POST(self):
                fake.requests.append(("POST", self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/api/blobs/"):
                    digest = self.path.removeprefix("/api/blobs/")
                    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                        return self._send(400, {"error": "digest mismatch"})
                    fake.blobs[digest] = body
                    return self._send(201)
                if self.path == "/api/create":
                    req = json.loads(body)
                    fake.creates.append(req)
                    if fake.refuse_create:
                        return self._send(400, {"error": fake.refuse_create})
                    missing = [d for d in req.get("files", {}).values() if d not in fake.blobs]
                    if missing:
                        return self._send(400, {"error": f"blob {missing[0]} not found"})
                    return self._send(200, {"status": "success"})
                self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def uploads(self) -> list[str]:
        return [
            p.removeprefix("/api/blobs/")
            for m, p in self.requests
            if m == "POST" and p.startswith("/api/blobs/")
        ]


@pytest.fixture
def fake_ollama():
    fake = FakeOllama()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The `edgekit` entry point in-process: exit code, stdout, stderr."""
    from edgekit.cli.main import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
