"""A Qwen3 GGUF gets the Qwen3 template: tools, the thinking toggle, Qwen's sampling
defaults; `verify` insists on the think tags."""

import json

import pytest

from edgekit.package import ollama
from edgekit.package.modelfile import parse
from edgekit.package.ollama_store import MEDIA_TYPES, Store
from edgekit.package.templates import QWEN3
from tests.package.conftest import run_cli

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]


def test_qwen3_package_keeps_template_thinking_and_defaults(capsys, qwen3_artifact, tmp_path):
    root = tmp_path / "models"
    code, out, err = run_cli(
        capsys,
        "package",
        "ollama",
        qwen3_artifact,
        "--name",
        "me/tiny-qwen3:q8",
        "--param",
        "temperature=0.7",
        "--store",
        root,
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["family"]["name"] == "qwen3" and d["family"]["thinking"] is True
    assert d["parameters"] == {
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.95,
        "repeat_penalty": 1,
        "stop": ["<|im_start|>", "<|im_end|>"],
    }
    mf = parse(qwen3_artifact.with_name(qwen3_artifact.stem + ".Modelfile").read_text())
    assert mf.template == QWEN3 and mf.system is None and parse(mf.render()) == mf
    assert d["created"]["manifest"].endswith("manifests/registry.ollama.ai/me/tiny-qwen3/q8")
    code, out, err = run_cli(capsys, "package", "verify", "me/tiny-qwen3:q8", "--store", root, "--json")
    v = json.loads(out)
    assert code == 0 and v["ok"], v["problems"]
    think = [c for c in v["checks"] if c["check"] == "think tags"]
    assert think and think[0]["ok"]


@pytest.mark.parametrize(
    "template, problem",
    [
        # a hand-written ChatML template: Ollama would infer no thinking tags
        (
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n",
            "thinking would be lost",
        ),
        # think tags kept, but the toggle never read
        (
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
            "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
            "{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
            "thinking toggle is lost",
        ),
        ("{{ if .Messages }}unclosed", "does not parse"),
    ],
)
def test_verify_refuses_a_qwen3_template_without_the_think_tags(
    capsys, qwen3_artifact, artifact_copy, tmp_path, template, problem
):
    root = tmp_path / "models"
    plan = ollama.plan_package(artifact_copy(qwen3_artifact), "q:1")
    result = ollama.create(plan, "store", str(root), link=False)
    manifest_path = root / "manifests/registry.ollama.ai/library/q/1"
    m = json.loads(manifest_path.read_text())
    layer = Store(root).writer().add_bytes(template.encode(), MEDIA_TYPES["template"])
    m["layers"] = [layer.to_dict() if x["mediaType"] == MEDIA_TYPES["template"] else x for x in m["layers"]]
    manifest_path.write_text(json.dumps(m))
    assert result.method == "store"
    code, out, err = run_cli(capsys, "package", "verify", "q:1", "--store", root, "--json")
    v = json.loads(out)
    assert code == 1 and any(problem in p for p in v["problems"]), v["problems"]
