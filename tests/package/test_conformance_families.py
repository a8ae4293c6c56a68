"""The conformance gate (issue 18) on the families whose published chat templates are not in the
reference llama.cpp tree: Gemma 3, Phi-4, Mixtral 8x7B / 8x22B, DeepSeek-R1 and DeepSeek-V3
(the 671B models). Their templates are test data in chat_templates/*.json, each with the
public copy it was taken from ("source"); the gate renders the fixed suite through the Ollama
TEMPLATE edgekit writes and through that template (jinja2, as transformers renders it).

Families Ollama is left to render from the GGUF (no TEMPLATE, REQUIRES 0.30.0) are checked to
get no TEMPLATE: DeepSeek-V3, Mistral-7B-Instruct-v0.2's first template (no system role) and
the Mistral templates with tools ([AVAILABLE_TOOLS]: the tool list before the last user turn,
tool call IDs of nine characters, which the suite does not carry)."""

import json
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.package import conformance, gotemplate, jinja_chat, ollama, templates
from edgekit.package.ollama_store import MEDIA_TYPES, Store
from tests.package.conftest import files_under, real_template, run_cli, write_gguf

pytest.importorskip("jinja2")

HERE = Path(__file__).parent / "chat_templates"
GEMMA = ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")
PHI4 = ("<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>")
MISTRAL = ("<s>", "</s>", "[INST]", "[/INST]")
DEEPSEEK = (
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>",
)


def fixture(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))


def gate(name: str, arch: str, tokens, add_bos: bool, template: str | None = None):
    fx = fixture(name)
    has = set(tokens).__contains__
    fam = templates.choose_family(arch, has, fx["chat_template"], fx["eos_token"])
    assert fam.template is not None, fam.reason
    return fam, conformance.run_gate(
        fam,
        template if template is not None else fam.template,
        fx["chat_template"],
        has,
        list(fam.stop),
        bos_token=fx["bos_token"],
        eos_token=fx["eos_token"],
        add_bos=add_bos,
    )


def test_every_fixture_names_its_model_and_public_source():
    for f in sorted(HERE.glob("*.json")):
        fx = json.loads(f.read_text(encoding="utf-8"))
        assert fx["model"] and " at " in fx["source"] and fx["chat_template"], f.name


# (fixture, architecture, tokens, add_bos, family, listed differences)
FAMILIES = [
    ("google-gemma-3-it", "gemma3", GEMMA, True, "gemma3", ["bos"]),
    ("microsoft-phi-4", "phi3", PHI4, False, "phi4", []),
    ("microsoft-phi-4-first-release", "phi3", PHI4, False, "phi4", []),
    ("mistralai-Mixtral-8x7B-Instruct-v0.1", "llama", MISTRAL, True, "mistral", ["bos"]),
    ("mistralai-Mixtral-8x22B-Instruct-v0.1", "llama", MISTRAL, True, "mistral", ["bos"]),
    ("deepseek-ai-DeepSeek-R1", "deepseek2", DEEPSEEK, True, "deepseek-r1", ["bos"]),
]


@pytest.mark.parametrize(
    "name, arch, tokens, add_bos, family, listed", FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_the_family_passes_the_gate_on_the_models_own_template(name, arch, tokens, add_bos, family, listed):
    fam, result = gate(name, arch, tokens, add_bos)
    assert fam.name == family
    assert result.ok, result.detail
    assert result.differences == listed
    ran = {c["case"] for c in result.cases if not c["result"].startswith("skipped")}
    assert {"system prompt", "no system prompt", "multi-turn", "thinking unset", "stop token"} <= ran
    if fam.thinking:
        assert "thinking on" in ran
    # none of these families offers tools: Ollama gives the model none, so nothing is lost
    assert fam.tool_tag is None and "tools" not in gotemplate.parse(fam.template).identifiers()


def test_mixtral_8x22b_puts_the_system_text_in_the_last_user_turn():
    """The two Mixtral layouts differ where the system text goes: both are rendered exactly."""
    case = next(c for c in conformance.SUITE if c.name == "multi-turn")
    prompts = {}
    for name in ("mistralai-Mixtral-8x7B-Instruct-v0.1", "mistralai-Mixtral-8x22B-Instruct-v0.1"):
        fam = templates.choose_family("llama", set(MISTRAL).__contains__, fixture(name)["chat_template"])
        prompts[name] = gotemplate.parse(fam.template or "").render(conformance.ollama_values(case, False))
    assert prompts["mistralai-Mixtral-8x7B-Instruct-v0.1"] == (
        " [INST] You are a concise assistant.\n\nHi! [/INST] Hello.</s> [INST] What is 2+2? [/INST]"
    )
    assert prompts["mistralai-Mixtral-8x22B-Instruct-v0.1"] == (
        "[INST] Hi![/INST] Hello.</s>[INST] You are a concise assistant.\n\nWhat is 2+2?[/INST]"
    )


def test_deepseek_r1_offers_no_tool_definitions_so_the_family_offers_no_tools():
    """R1's template replays earlier tool calls and results but never shows the model a tool
    list: rendering with tools gives the prompt without them. The family therefore offers no
    tools (Ollama would otherwise hand the model tools it is never told about), and the gate
    skips the tool cases saying why."""
    ct = fixture("deepseek-ai-DeepSeek-R1")["chat_template"]
    assert conformance.chat_template_has_tools(ct)  # it mentions tool_calls...
    case = next(c for c in conformance.SUITE if c.name == "tool definitions")
    msgs = conformance.jinja_messages(case)
    assert jinja_chat.render(ct, msgs, [conformance.WEATHER_TOOL]) == jinja_chat.render(
        ct, msgs
    )  # ...no list
    fam, result = gate("deepseek-ai-DeepSeek-R1", "deepseek2", DEEPSEEK, True)
    skipped = {c["case"]: c["result"] for c in result.cases if c["result"].startswith("skipped")}
    for name in ("tool definitions", "tool call and result", "answer after a tool result"):
        assert skipped[name] == "skipped: the family offers no tool calls"
    assert skipped["thinking off"] == "skipped: the chat template has no thinking switch"


@pytest.mark.parametrize(
    "name, arch, tokens",
    [
        ("deepseek-ai-DeepSeek-V3", "deepseek2", DEEPSEEK),
        ("mistralai-Mistral-7B-Instruct-v0.2", "llama", MISTRAL),
    ],
)
def test_families_left_to_the_ggufs_own_template_get_no_template(tmp_path, name, arch, tokens):
    fx = fixture(name)
    fam = templates.choose_family(arch, set(tokens).__contains__, fx["chat_template"], fx["eos_token"])
    assert fam.name == "gguf" and fam.template is None
    gguf = write_gguf(tmp_path / "m.gguf", arch=arch, tokens=list(tokens), chat_template=fx["chat_template"])
    plan = ollama.plan_package(gguf, "m:1")
    text = plan.modelfile_text()
    assert "TEMPLATE" not in text and f"REQUIRES {ollama.GGUF_TEMPLATE_MIN_OLLAMA}" in text


def test_a_mistral_template_with_tools_is_left_to_the_gguf():
    ct = real_template("mistralai-Mistral-Nemo-Instruct-2407")
    if ct is None:
        pytest.skip("the reference llama.cpp tree (make setup) is not installed")
    assert "[AVAILABLE_TOOLS]" in ct
    assert templates.choose_family("llama", set(MISTRAL).__contains__, ct).name == "gguf"


# ---- templates that lose what the model's own template offers fail in one line -----------------


def test_a_deepseek_r1_template_that_loses_thinking_fails_the_gate():
    broken = templates.DEEPSEEK_R1.replace("<think>", "").replace("</think>", "")
    fam, result = gate("deepseek-ai-DeepSeek-R1", "deepseek2", DEEPSEEK, True, template=broken)
    assert not result.ok
    assert result.detail.startswith("deepseek-r1: case 'thinking on': the TEMPLATE loses thinking")


def test_a_llama3_template_that_loses_tools_fails_the_gate():
    ct = real_template("meta-llama-Llama-3.1-8B-Instruct")
    if ct is None:
        pytest.skip("the reference llama.cpp tree (make setup) is not installed")
    broken = templates.LLAMA3.replace("{{ if .Tools }}", "{{ if false }}").replace(
        "{{- $toolsAt := -1 }}{{ if .Tools }}", "{{- $toolsAt := -1 }}{{ if false }}"
    )
    broken = broken.replace("$.Tools", "$.Messages")
    assert "Tools" not in broken
    llama3 = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    fam = templates.choose_family("llama", set(llama3).__contains__, ct)
    result = conformance.run_gate(
        fam, broken, ct, set(llama3).__contains__, list(fam.stop), "<|begin_of_text|>", add_bos=True
    )
    assert not result.ok
    assert result.detail == (
        "llama3: case 'tool definitions': the TEMPLATE loses the tools the model's chat template offers"
    )


MIXTRAL_NO_SYSTEM = templates.MISTRAL_V1.replace("{{ $system }}\n\n", "")


def test_verify_fails_on_a_mixtral_template_that_drops_the_system_prompt(capsys, tmp_path):
    fx = fixture("mistralai-Mixtral-8x7B-Instruct-v0.1")
    assert MIXTRAL_NO_SYSTEM != templates.MISTRAL_V1
    d = tmp_path / "a"
    d.mkdir()
    tokens = ["</s>", "<s>", "a", "b"]  # the hand-made GGUF's EOS is token 0
    gguf = write_gguf(d / "mx.gguf", arch="llama", tokens=tokens, chat_template=fx["chat_template"])
    root = tmp_path / "models"
    plan = ollama.plan_package(gguf, "mx:1")
    assert plan.family.name == "mistral"
    ollama.create(plan, "store", str(root), link=False)
    code, out, _ = run_cli(capsys, "package", "verify", "mx:1", "--store", root, "--json")
    assert code == 0 and json.loads(out)["ok"], out
    mpath = root / "manifests/registry.ollama.ai/library/mx/1"
    m = json.loads(mpath.read_text())
    layer = Store(root).writer().add_bytes(MIXTRAL_NO_SYSTEM.encode(), MEDIA_TYPES["template"])
    m["layers"] = [layer.to_dict() if x["mediaType"] == MEDIA_TYPES["template"] else x for x in m["layers"]]
    mpath.write_text(json.dumps(m))
    code, out, _ = run_cli(capsys, "package", "verify", "mx:1", "--store", root, "--json")
    gate_lines = [p for p in json.loads(out)["problems"] if p.startswith("conformance: ")]
    assert code == 1 and len(gate_lines) == 1, out
    assert "mistral: case 'system prompt': the prompts differ" in gate_lines[0] and "\n" not in gate_lines[0]
    # and without --json: exit 1, the failing check on one line
    code, out, err = run_cli(capsys, "package", "verify", "mx:1", "--store", root)
    assert code == 1
    assert [line for line in (out + err).splitlines() if "mistral: case 'system prompt'" in line]


def test_package_ollama_refuses_a_mixtral_template_that_drops_the_system_prompt(monkeypatch, tmp_path):
    fx = fixture("mistralai-Mixtral-8x7B-Instruct-v0.1")
    gguf = write_gguf(
        tmp_path / "mx.gguf", arch="llama", tokens=["</s>", "<s>", "a"], chat_template=fx["chat_template"]
    )
    monkeypatch.setattr(templates, "MISTRAL_V1", MIXTRAL_NO_SYSTEM)
    with pytest.raises(EdgekitError) as e:
        ollama.plan_package(gguf, "mx:1")
    assert "conformance gate failed: mistral: case 'system prompt'" in e.value.one_line()
    assert files_under(tmp_path) == ["mx.gguf"]


def test_the_cli_refuses_it_in_one_line_with_exit_2_and_writes_nothing(capsys, monkeypatch, tmp_path):
    fx = fixture("mistralai-Mixtral-8x7B-Instruct-v0.1")
    d = tmp_path / "a"
    d.mkdir()
    gguf = write_gguf(
        d / "mx.gguf", arch="llama", tokens=["</s>", "<s>", "a"], chat_template=fx["chat_template"]
    )
    monkeypatch.setattr(templates, "MISTRAL_V1", MIXTRAL_NO_SYSTEM)
    store = tmp_path / "store"
    code, out, err = run_cli(capsys, "package", "ollama", str(gguf), "--name", "mx:1", "--store", str(store))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("edgekit: error: conformance gate failed: mistral: case 'system prompt'")
    assert not store.exists() and files_under(d) == ["mx.gguf"]
