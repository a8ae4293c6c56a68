"""License resolution and blob reuse, on a hand-made GGUF (no model build needed)."""

import json

from edgekit.models.catalogue import licenses
from edgekit.package import ollama
from edgekit.package.modelfile import parse
from edgekit.package.ollama_store import Store
from tests.package.conftest import files_under, run_cli


def _with_manifest(gguf, license_key=None, checkpoint=None):
    source = {"name": "hand-made", "path": str(checkpoint) if checkpoint else None}
    if license_key:
        source["license"] = licenses()[license_key].to_dict()
    gguf.with_name(gguf.name + ".manifest.json").write_text(
        json.dumps({"format": "gguf:Q8_0", "source": source})
    )


def test_conditional_license_is_named_linked_and_warned_about(tiny_gguf):
    _with_manifest(tiny_gguf, "llama3_1")
    plan = ollama.plan_package(tiny_gguf, "mymodel:1")
    notice, text = plan.modelfile.licenses
    # the attribution the license asks every copy to carry, word for word; no change statement
    assert notice == (
        "Llama 3.1 is licensed under the Llama 3.1 Community License, "
        "Copyright © Meta Platforms, Inc. All Rights Reserved.\n"
    )
    assert "Llama 3.1 Community License" in text and "https://www.llama.com/llama3_1/license/" in text
    assert "700 million monthly active users" in text
    assert any("is a conditional license" in w for w in plan.warnings)
    assert any("begin with 'Llama'; 'mymodel' does not" in w for w in plan.warnings)
    assert any("full text of 'Llama 3.1 Community License' was not found" in w for w in plan.warnings)
    assert not any("does not" in w for w in ollama.plan_package(tiny_gguf, "llama-mine:1").warnings)


def test_the_checkpoints_own_license_file_wins(tiny_gguf, tmp_path):
    ck = tmp_path / "checkpoint"
    ck.mkdir()
    (ck / "LICENSE").write_text("The exact license shipped with the weights.\n")
    _with_manifest(tiny_gguf, "apache-2_0", ck)
    plan = ollama.plan_package(tiny_gguf, "m:1")
    changed, text = plan.modelfile.licenses
    assert text == "The exact license shipped with the weights.\n"
    # Apache-2.0 section 4(b): modified files say they were changed
    assert changed.startswith(
        "Modified: these weights were converted from hand-made and quantized to gguf:Q8_0"
    )
    assert plan.license.text_source == str(ck / "LICENSE") and plan.warnings == []


def test_gemma_packages_its_notice_and_the_change_statement(tiny_gguf):
    _with_manifest(tiny_gguf, "gemma")
    plan = ollama.plan_package(tiny_gguf, "g:1")
    notice, text = plan.modelfile.licenses
    first, second = notice.rstrip("\n").split("\n\n")
    assert (
        first
        == "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
    )
    assert second.startswith("Modified: ") and "gguf:Q8_0" in second
    assert "Prohibited Use Policy" in text and "https://ai.google.dev/gemma/terms" in text
    assert plan.license.to_dict()["notice"] == notice
    # what the Modelfile says is what Ollama stores: two LICENSE blocks, in this order
    assert parse(plan.modelfile.render()).licenses == [notice, text]


def test_a_manifest_from_before_notices_gets_the_catalogues(tiny_gguf):
    lic = licenses()["gemma"].to_dict()
    for key in ("notice", "marks_changes"):
        lic.pop(key)
    source = {"name": "hand-made", "path": None, "license": lic}
    tiny_gguf.with_name(tiny_gguf.name + ".manifest.json").write_text(
        json.dumps({"format": "gguf:Q8_0", "source": source})
    )
    assert ollama.plan_package(tiny_gguf, "g:1").modelfile.licenses[0].startswith("Gemma is provided")


def test_unknown_license_packages_none_and_says_so(tiny_gguf):
    plan = ollama.plan_package(tiny_gguf, "m:1")  # no manifest, no general.license
    assert plan.modelfile.licenses == [] and plan.license is None
    assert plan.warnings == [
        "the license of this model is unknown: no LICENSE is packaged; check the model card"
    ]


def test_existing_blobs_are_reused_only_when_their_digest_is_right(capsys, tiny_gguf, tmp_path):
    _with_manifest(tiny_gguf, "mit")
    root = tmp_path / "models"
    code, out, err = run_cli(
        capsys, "package", "ollama", tiny_gguf, "--name", "m:1", "--store", root, "--json"
    )
    first = json.loads(out)["created"]["layers"]
    assert code == 0 and not any(x["reused"] for x in first)
    damaged = root / "blobs" / first[1]["digest"].replace(":", "-")  # the template blob
    damaged.write_bytes(b"X" * first[1]["size"])  # same size, wrong bytes
    code, out, err = run_cli(
        capsys, "package", "ollama", tiny_gguf, "--name", "m:2", "--store", root, "--json"
    )
    second = {x["kind"]: x["reused"] for x in json.loads(out)["created"]["layers"]}
    assert second["template"] is False and second["model"] is True and second["license"] is True
    assert "sha256:" + __import__("hashlib").sha256(damaged.read_bytes()).hexdigest() == first[1]["digest"]
    code, out, err = run_cli(capsys, "package", "verify", "m:1", "--store", root)
    assert code == 0, out
    assert "stop tokens            <|im_start|>, <|im_end|> (all in the vocabulary)" in out
    assert len([f for f in files_under(root) if f.startswith("manifests/")]) == 5  # 3 dirs + 2 tags


def test_human_output_and_modelfile_on_a_hand_made_gguf(capsys, tiny_gguf):
    code, out, err = run_cli(capsys, "package", "ollama", tiny_gguf, "--name", "hand:made")
    assert code == 0, err
    assert "template       chatml: llama architecture with ChatML tokens" in out
    assert "create with    ollama create hand:made -f " in out
    mf = parse(tiny_gguf.with_name("hand-made.Modelfile").read_text())
    assert mf.from_ == "./hand-made.gguf" and mf.parameters_json() == {"stop": ["<|im_start|>", "<|im_end|>"]}
    assert Store(tiny_gguf.parent / "nowhere").root.name == "nowhere"
