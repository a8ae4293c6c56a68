"""The SmolLM2 artifact packaged for Ollama: the Modelfile, the store as Ollama lays it out,
and `verify` catching damage."""

import hashlib
import json
import re

import pytest

from edgekit.package import ollama
from edgekit.package.modelfile import parse
from edgekit.package.ollama_store import MANIFEST_MEDIA_TYPE, Store
from edgekit.package.templates import CHATML
from tests.package.conftest import files_under, run_cli

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
MANIFEST = "manifests/registry.ollama.ai/library/smollm2/q8"


def test_modelfile_next_to_the_artifact_round_trips(capsys, smollm2_artifact):
    code, out, err = run_cli(capsys, "package", "ollama", smollm2_artifact, "--name", "smollm2:q8", "--json")
    assert code == 0, err
    d = json.loads(out)
    path = smollm2_artifact.with_name(smollm2_artifact.stem + ".Modelfile")
    assert d["modelfile"] == str(path) and d["command"] == f"ollama create smollm2:q8 -f {path}"
    text = path.read_text()
    assert text == d["modelfile_text"]
    mf = parse(text)
    assert mf.from_ == f"./{smollm2_artifact.name}"  # relative to the Modelfile, as Ollama resolves it
    assert mf.template == CHATML and mf.system == SMOL_SYSTEM
    assert mf.parameters == [("stop", "<|im_start|>"), ("stop", "<|im_end|>")]
    apache = ollama._shipped_license("Apache-2.0") or ""
    assert "Apache License" in apache and "END OF TERMS AND CONDITIONS" in apache
    # Apache-2.0 section 4(b): modified files say they were changed, before the license text
    change = (
        "Modified: these weights were converted from HuggingFaceTB/SmolLM2-135M-Instruct and "
        "quantized to gguf:Q8_0 by edgekit; they differ from the original weights.\n"
    )
    assert mf.licenses == [change, apache]
    assert parse(mf.render()) == mf
    assert d["family"]["name"] == "chatml" and d["license"]["name"] == "Apache-2.0" and d["warnings"] == []
    assert (d["architecture"], d["model_type"], d["file_type"]) == ("llama", "134.52M", "Q8_0")


def test_gguf_facts_agree_with_the_gguf_package(smollm2_artifact):
    from edgekit.gguf_io.reader import field_value, open_reader

    facts, reader = ollama.read_gguf_facts(smollm2_artifact), open_reader(smollm2_artifact)
    assert facts.tokens == field_value(reader, "tokenizer.ggml.tokens") and len(facts.tokens) == 49152
    assert facts.chat_template == field_value(reader, "tokenizer.chat_template")
    assert (facts.architecture, facts.file_type, facts.eos_token) == ("llama", "Q8_0", "<|im_end|>")
    assert facts.parameter_count == sum(int(t.n_elements) for t in reader.tensors)


def test_chatml_template_renders_what_the_ggufs_chat_template_renders(smollm2_artifact):
    """Ollama prepends SYSTEM as a system message when a chat has none; the GGUF's own Jinja
    template inserts the same default. Both must give the same prompt."""
    jinja2 = pytest.importorskip("jinja2")
    from types import SimpleNamespace as NS

    from edgekit.package import gotemplate

    facts = ollama.read_gguf_facts(smollm2_artifact)
    jinja = jinja2.Environment().from_string(facts.chat_template)
    ours = gotemplate.parse(CHATML)
    for conv in (
        [("user", "Hi!")],
        [("system", "Be brief."), ("user", "Hi!"), ("assistant", "Hello."), ("user", "2+2?")],
    ):
        expected = jinja.render(
            messages=[{"role": r, "content": c} for r, c in conv], add_generation_prompt=True
        )
        with_system = conv if conv[0][0] == "system" else [("system", SMOL_SYSTEM), *conv]
        got = ours.render({"Messages": [NS(Role=r, Content=c) for r, c in with_system]})
        assert got == expected


def _store(capsys, artifact, store, *extra):
    code, out, err = run_cli(
        capsys, "package", "ollama", artifact, "--name", "smollm2:q8", "--store", store, "--json", *extra
    )
    assert code == 0, err
    return json.loads(out)["created"]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_store_is_laid_out_as_ollama_does(capsys, smollm2_artifact, tmp_path):
    root = tmp_path / "models"
    created = _store(capsys, smollm2_artifact, root)
    assert created["method"] == "store" and created["manifest"] == str(root / MANIFEST)
    raw = (root / MANIFEST).read_bytes()
    assert raw.endswith(b"}\n") and b": " not in raw  # Go's json.Encoder: compact, one newline
    m = json.loads(raw)
    assert list(m) == ["schemaVersion", "mediaType", "config", "layers"]
    assert m["schemaVersion"] == 2 and m["mediaType"] == MANIFEST_MEDIA_TYPE
    assert m["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    kinds = [x["mediaType"].removeprefix("application/vnd.ollama.image.") for x in m["layers"]]
    assert kinds == ["model", "template", "system", "license", "license", "params"]
    for entry in [m["config"], *m["layers"]]:
        assert list(entry) == ["mediaType", "digest", "size"]
        blob = root / "blobs" / entry["digest"].replace(":", "-")
        data = blob.read_bytes()
        assert _sha(data) == entry["digest"] and len(data) == entry["size"]
        assert blob.stat().st_mode & 0o444 == 0o444
    model, template, system, change, lic, params = m["layers"]
    artifact_manifest = json.loads(
        smollm2_artifact.with_name(smollm2_artifact.name + ".manifest.json").read_text()
    )
    assert (
        model["digest"] == "sha256:" + artifact_manifest["sha256"]
        and model["size"] == artifact_manifest["size_bytes"]
    )
    blob = lambda e: (root / "blobs" / e["digest"].replace(":", "-")).read_bytes()  # noqa: E731
    assert blob(template).decode() == CHATML and blob(system).decode() == SMOL_SYSTEM
    assert blob(change).decode().startswith("Modified: these weights were converted from ")
    assert blob(lic).decode() == ollama._shipped_license("Apache-2.0")
    assert blob(params) == b'{"stop":["\\u003c|im_start|\\u003e","\\u003c|im_end|\\u003e"]}\n'
    config = json.loads(blob(m["config"]))
    assert config == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "134.52M",
        "file_type": "Q8_0",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in m["layers"]]},
    }
    assert not [f for f in files_under(root) if f.endswith(".part") or "/." in f]
    # readable by a server running as another user; hard-linked only when that holds for the artifact
    model_blob = root / "blobs" / model["digest"].replace(":", "-")
    assert model_blob.samefile(smollm2_artifact) == (smollm2_artifact.stat().st_mode & 0o444 == 0o444)
    # a second run reuses every blob and writes the same manifest
    again = _store(capsys, smollm2_artifact, root)
    assert all(x["reused"] for x in again["layers"]) and (root / MANIFEST).read_bytes() == raw
    code, out, err = run_cli(capsys, "package", "verify", "smollm2:q8", "--store", root, "--json")
    assert code == 0, out
    v = json.loads(out)
    assert v["ok"] and v["problems"] == [] and len(v["checks"]) >= 10


def _copy_into_store(artifact_copy, smollm2_artifact, root):
    plan = ollama.plan_package(artifact_copy(smollm2_artifact), "smollm2:q8")
    return ollama.create(plan, "store", str(root), link=False)


def _verify(capsys, root):
    code, out, err = run_cli(capsys, "package", "verify", "smollm2:q8", "--store", root, "--json")
    return code, json.loads(out)


def _manifest(root):
    return json.loads((root / MANIFEST).read_text())


def _blob(root, kind):
    (entry,) = [x for x in _manifest(root)["layers"] if x["mediaType"].endswith("." + kind)]
    return root / "blobs" / entry["digest"].replace(":", "-")


@pytest.mark.parametrize("kind", ["model", "template"])
def test_verify_catches_a_flipped_byte(capsys, smollm2_artifact, artifact_copy, tmp_path, kind):
    root = tmp_path / "models"
    _copy_into_store(artifact_copy, smollm2_artifact, root)
    assert _verify(capsys, root)[0] == 0
    blob = _blob(root, kind)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    code, v = _verify(capsys, root)
    assert code == 1 and not v["ok"]
    assert any(p.startswith(f"{kind} ") and "digest mismatch" in p for p in v["problems"]), v["problems"]


def test_verify_catches_a_missing_layer(capsys, smollm2_artifact, artifact_copy, tmp_path):
    root = tmp_path / "models"
    _copy_into_store(artifact_copy, smollm2_artifact, root)
    # a blob that is gone
    _blob(root, "system").unlink()
    code, v = _verify(capsys, root)
    assert code == 1 and any(p.startswith("system ") and "blob missing" in p for p in v["problems"])
    # a manifest without its params layer: the template ends turns with <|im_end|>, which is no longer a stop
    _copy_into_store(artifact_copy, smollm2_artifact, root)
    m = _manifest(root)
    m["layers"] = [x for x in m["layers"] if not x["mediaType"].endswith(".params")]
    (root / MANIFEST).write_text(json.dumps(m))
    code, v = _verify(capsys, root)
    assert code == 1 and any("<|im_end|> but it is not a stop token" in p for p in v["problems"]), v[
        "problems"
    ]
    # a manifest without its model layer
    m["layers"] = [x for x in m["layers"] if not x["mediaType"].endswith(".model")]
    (root / MANIFEST).write_text(json.dumps(m))
    code, v = _verify(capsys, root)
    assert code == 1 and any(p.startswith("model layer: 0 model layers") for p in v["problems"])


def test_verify_checks_media_types_sizes_and_stop_tokens(capsys, smollm2_artifact, artifact_copy, tmp_path):
    root = tmp_path / "models"
    _copy_into_store(artifact_copy, smollm2_artifact, root)
    good = _manifest(root)
    m = json.loads(json.dumps(good))
    m["layers"][1]["mediaType"] = "application/vnd.ollama.image.templat"
    m["layers"][2]["size"] += 1
    (root / MANIFEST).write_text(json.dumps(m))
    code, v = _verify(capsys, root)
    assert code == 1
    assert any("unknown media type 'application/vnd.ollama.image.templat'" in p for p in v["problems"])
    assert any(re.match(r"system \w+: size \d+ on disk, \d+ in the manifest", p) for p in v["problems"])
    # a stop string that looks like a special token but is not in SmolLM2's vocabulary
    from edgekit.package.ollama_store import MEDIA_TYPES, go_json

    writer = Store(root).writer()
    params = writer.add_bytes(
        go_json({"stop": ["<|im_start|>", "<|im_end|>", "<|eot_id|>"]}), MEDIA_TYPES["params"]
    )
    good["layers"][-1] = params.to_dict()
    (root / MANIFEST).write_text(json.dumps(good))
    code, v = _verify(capsys, root)
    assert code == 1 and "stop tokens: '<|eot_id|>' is not a token of the tokenizer" in v["problems"]
    code, out, err = run_cli(capsys, "package", "verify", "smollm2:q8", "--store", root)
    assert code == 1 and "FAIL" in out and "<|eot_id|>" in out


def test_a_readable_artifact_is_hard_linked_not_copied(capsys, smollm2_artifact, artifact_copy, tmp_path):
    own = artifact_copy(smollm2_artifact)
    own.chmod(0o644)
    root = tmp_path / "models"
    created = _store(capsys, own, root)
    (model,) = [x for x in created["layers"] if x["kind"] == "model"]
    assert (root / "blobs" / model["digest"].replace(":", "-")).samefile(own)
    own.chmod(0o600)  # a private artifact is copied, so the blob stays readable by the server
    other = tmp_path / "models2"
    created = _store(capsys, own, other)
    blob = other / "blobs" / model["digest"].replace(":", "-")
    assert not blob.samefile(own) and blob.stat().st_mode & 0o777 == 0o644
