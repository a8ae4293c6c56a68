"""Bad names, files that are not GGUFs and stores that cannot be written: one line on
stderr, a non-zero exit, and nothing half-written anywhere."""

import os

import pytest

from edgekit.errors import EdgekitError
from edgekit.package import ollama
from edgekit.package.ollama_store import Store, StoreWriter
from tests.package.conftest import files_under, run_cli


def _one_line_error(code, out, err):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), err
    return lines[0]


@pytest.mark.parametrize("name", ["../x", "a/b/c/d", "x:y:z", "m" * 200, "", "a/../../b", "with space"])
def test_hostile_names_write_nothing(capsys, tiny_gguf, tmp_path, name):
    store = tmp_path / "store"
    line = _one_line_error(*run_cli(capsys, "package", "ollama", tiny_gguf, "--name", name, "--store", store))
    assert "model name" in line
    assert not store.exists()
    assert files_under(tiny_gguf.parent) == ["hand-made.gguf"]  # no Modelfile either


def test_a_file_that_is_not_a_gguf_is_refused(capsys, tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("these are notes, not weights\n" * 10)
    store = tmp_path / "store"
    line = _one_line_error(*run_cli(capsys, "package", "ollama", fake, "--name", "m", "--store", store))
    assert "not a GGUF file" in line and "bad magic" in line
    assert not store.exists() and files_under(tmp_path) == ["notes.gguf"]
    missing = _one_line_error(*run_cli(capsys, "package", "ollama", tmp_path / "nope.gguf", "--name", "m"))
    assert "no such file" in missing


def test_a_truncated_gguf_is_refused(capsys, tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    tiny_gguf.write_bytes(data[: len(data) - 16])
    line = _one_line_error(
        *run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "m", "--store", tmp_path / "s")
    )
    assert "truncated GGUF" in line


def test_store_under_a_regular_file_is_refused(capsys, tiny_gguf, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    line = _one_line_error(
        *run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "m", "--store", blocker / "models")
    )
    assert "cannot write the Ollama store" in line and "is not a directory" in line
    assert files_under(tmp_path) == ["artifacts", "artifacts/hand-made.gguf", "not-a-dir"]


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only directories; the regular-file case covers it"
)
def test_read_only_store_is_refused(capsys, tiny_gguf, tmp_path):
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(0o500)
    try:
        line = _one_line_error(
            *run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "m", "--store", store)
        )
    finally:
        store.chmod(0o700)
    assert "not writable" in line and files_under(store) == []


def test_a_failure_half_way_removes_what_it_wrote(tiny_gguf, tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    (store.root / "blobs").mkdir(parents=True)
    keep = store.root / "blobs" / ("sha256-" + "0" * 64)
    keep.write_bytes(b"someone else's blob")

    def disk_full(self, name, config, layers):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StoreWriter, "write_manifest", disk_full)
    plan = ollama.plan_package(tiny_gguf, "m:1")
    with pytest.raises(EdgekitError) as e:
        ollama.create(plan, "store", str(store.root))
    assert "No space left on device" in e.value.one_line()
    assert files_under(store.root) == ["blobs", "blobs/" + keep.name]  # blobs written this run are gone


@pytest.mark.parametrize(
    "args, error",
    [
        (["--param", "temprature=1"], "unknown Ollama parameter 'temprature'"),
        (["--param", "top_k=many"], "is not a whole number"),
        (["--param", "temperature=inf"], "'inf' is not a finite number"),
        (["--param", "temperature=nan"], "'nan' is not a finite number"),
        (["--param", "num_ctx"], "expected NAME=VALUE"),
        (["--param", "stop=<|eot_id|>"], "not in the tokenizer's vocabulary"),
        (["--system", 'say """hi"""'], 'contains """'),
        (["--create", "--store", "x"], "give one of --create"),
        (["--host", "ftp://nowhere"], "not an Ollama server address"),
    ],
)
def test_bad_options_are_one_line(capsys, tiny_gguf, args, error):
    line = _one_line_error(*run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "m", *args))
    assert error in line
    assert files_under(tiny_gguf.parent) == ["hand-made.gguf"]


def test_unreachable_server_is_one_line(capsys, tiny_gguf):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _one_line_error(
        *run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "m", "--host", f"127.0.0.1:{port}")
    )
    assert f"no Ollama server answers at http://127.0.0.1:{port}" in line


def test_verify_of_a_missing_model_is_one_line(capsys, tmp_path):
    line = _one_line_error(*run_cli(capsys, "package", "verify", "ghost:1", "--store", tmp_path))
    assert "no model ghost:1 in the Ollama store" in line
