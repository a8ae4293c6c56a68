"""Creating through a running server: a fake Ollama on 127.0.0.1 receives the GGUF upload and
the create call; --create picks the binary, then OLLAMA_HOST, then the store."""

import hashlib
import json
import stat

import pytest

from edgekit.package.templates import CHATML
from tests.package.conftest import files_under, needs_ollama, run_cli

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def _sha256(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_receives_the_upload_and_the_create_call(capsys, smollm2_artifact, fake_ollama):
    code, out, err = run_cli(
        capsys,
        "package",
        "ollama",
        smollm2_artifact,
        "--name",
        "smollm2:q8",
        "--param",
        "num_ctx=4096",
        "--host",
        fake_ollama.url,
        "--json",
    )
    assert code == 0, err
    digest = _sha256(smollm2_artifact)
    manifest = json.loads(smollm2_artifact.with_name(smollm2_artifact.name + ".manifest.json").read_text())
    assert digest == "sha256:" + manifest["sha256"]
    assert fake_ollama.uploads() == [digest]
    assert fake_ollama.blobs[digest] == smollm2_artifact.read_bytes()
    assert ("HEAD", f"/api/blobs/{digest}") in fake_ollama.requests
    (req,) = fake_ollama.creates
    license_text = req.pop("license")
    assert req == {
        "model": "smollm2:q8",
        "files": {smollm2_artifact.name: digest},
        "template": CHATML,
        "system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "parameters": {"num_ctx": 4096, "stop": ["<|im_start|>", "<|im_end|>"]},
        "stream": False,
    }
    # Apache-2.0 asks modified files to say so: the change statement, then the license text
    assert len(license_text) == 2 and license_text[0].startswith("Modified: ")
    assert "Apache License" in license_text[1] and "Version 2.0" in license_text[1]
    d = json.loads(out)
    assert d["created"]["method"] == "server" and d["created"]["where"] == fake_ollama.url
    assert d["created"]["layers"] == [
        {"kind": "model", "digest": digest, "size": smollm2_artifact.stat().st_size, "reused": False}
    ]
    # the server has the blob now: a second create sends no bytes
    code, out, err = run_cli(
        capsys,
        "package",
        "ollama",
        smollm2_artifact,
        "--name",
        "smollm2:q8",
        "--host",
        fake_ollama.url,
        "--json",
    )
    assert code == 0 and fake_ollama.uploads() == [digest] and len(fake_ollama.creates) == 2
    assert json.loads(out)["created"]["layers"][0]["reused"] is True


def test_server_errors_are_one_line(capsys, smollm2_artifact, fake_ollama):
    fake_ollama.refuse_create = "invalid model name"
    code, out, err = run_cli(
        capsys, "package", "ollama", smollm2_artifact, "--name", "smollm2:q8", "--host", fake_ollama.url
    )
    assert code == 2 and err.strip().count("\n") == 0
    assert (
        f"the Ollama server at {fake_ollama.url} could not create smollm2:q8: 400 invalid model name" in err
    )


def _path_without_ollama(monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_create_uses_ollama_host_when_there_is_no_binary(
    capsys, smollm2_artifact, fake_ollama, monkeypatch, tmp_path
):
    _path_without_ollama(monkeypatch, tmp_path)
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url.removeprefix("http://"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    code, out, err = run_cli(
        capsys, "package", "ollama", smollm2_artifact, "--name", "s:1", "--create", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["created"]["method"] == "server" and len(fake_ollama.creates) == 1
    assert not (tmp_path / "models").exists()


def test_create_falls_back_to_the_store(capsys, smollm2_artifact, monkeypatch, tmp_path):
    _path_without_ollama(monkeypatch, tmp_path)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    code, out, err = run_cli(capsys, "package", "ollama", smollm2_artifact, "--name", "s:1", "--create")
    assert code == 0, err
    assert "created        s:1 with the Ollama store at " + str(tmp_path / "models") in out
    assert "manifests/registry.ollama.ai/library/s/1" in files_under(tmp_path / "models")
    assert "no ollama binary on PATH, OLLAMA_HOST unset: the model was written into the store directly" in out


def test_create_prefers_the_ollama_binary(capsys, smollm2_artifact, fake_ollama, monkeypatch, tmp_path):
    # a stand-in that records how it was called: the real binary cannot be installed here
    bindir = _path_without_ollama(monkeypatch, tmp_path)
    record = tmp_path / "called.txt"
    script = bindir / "ollama"
    script.write_text(f'#!/bin/sh\necho "$PWD" "$@" > {record}\necho "success"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    code, out, err = run_cli(
        capsys, "package", "ollama", smollm2_artifact, "--name", "s:1", "--create", "--json"
    )
    assert code == 0, err
    modelfile = smollm2_artifact.with_name(smollm2_artifact.stem + ".Modelfile")
    assert record.read_text().split() == [str(smollm2_artifact.parent), "create", "s:1", "-f", str(modelfile)]
    assert json.loads(out)["created"]["method"] == "binary" and fake_ollama.creates == []


@needs_ollama
def test_real_ollama_binary_creates_and_shows_the_model(smollm2_artifact, tmp_path):
    """Runs only where an ollama binary (and its server) exist."""
    import subprocess

    from edgekit.package import ollama

    plan = ollama.plan_package(smollm2_artifact, "edgekit-test-smollm2:q8")
    result = ollama.create(plan, "binary", __import__("shutil").which("ollama"))
    assert result.method == "binary"
    shown = subprocess.run(
        ["ollama", "show", "--modelfile", "edgekit-test-smollm2:q8"], capture_output=True, text=True
    )
    assert "<|im_start|>" in shown.stdout and 'stop "<|im_end|>"' in shown.stdout
    subprocess.run(["ollama", "rm", "edgekit-test-smollm2:q8"], capture_output=True)
