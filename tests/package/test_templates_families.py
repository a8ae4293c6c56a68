"""The Ollama templates of Gemma 3, Phi-3.5, Phi-4 and DeepSeek-R1 against the prompts the models'
own chat formats produce: rendered with edgekit's Go-template renderer as Ollama would fill it, and
with jinja2 (as transformers renders a chat_template) from the models' published templates, where
the reference llama.cpp tree `make setup` installs holds them; by hand from the documented format
otherwise (Gemma 3, Phi-4: their published templates are checked in test_conformance_families)."""

import json
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from edgekit.package import gotemplate
from edgekit.package.templates import DEEPSEEK_R1, GEMMA3, PHI3, PHI4, choose_family

ROOT = Path(__file__).resolve().parents[2]


def reference_path(*parts: str) -> Path | None:
    """A file of the reference llama.cpp tree (EDGEKIT_LLAMACPP_SRC, else the part of it
    `make setup` installs in the virtual environment: the converter and models/templates)."""
    import os
    import sys

    roots = [
        os.environ.get("EDGEKIT_LLAMACPP_SRC", ""),
        str(Path(sys.prefix) / "share" / "llama.cpp-convert"),
    ]
    for root in filter(None, roots):
        if (Path(root).joinpath(*parts)).is_file():
            return Path(root).joinpath(*parts)
    return None


CONVERSATIONS = {
    "one turn": [("user", "Hi!")],
    "system": [("system", "Be brief."), ("user", "Hi!")],
    "multi-turn": [("user", "Hi!"), ("assistant", "Hello."), ("user", "2+2?")],
    "system, multi-turn": [
        ("system", "Be brief."),
        ("user", "Hi!"),
        ("assistant", "Hello."),
        ("user", "2+2?"),
    ],
}


def render(template: str, conv, think=None) -> str:
    values = {
        "Messages": [NS(Role=r, Content=c, Thinking="", ToolCalls=[]) for r, c in conv],
        "System": next((c for r, c in conv if r == "system"), ""),
        "Tools": [],
        "Think": bool(think),
        "IsThinkSet": think is not None,
    }
    return gotemplate.parse(template).render(values)


def jinja(name: str, conv, **extra) -> str:
    jinja2 = pytest.importorskip("jinja2")
    path = reference_path("models", "templates", name)
    if path is None:
        pytest.skip("the reference llama.cpp tree (make setup) is not installed")
    env = jinja2.Environment()
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    return env.from_string(Path(path).read_text()).render(
        messages=[{"role": r, "content": c} for r, c in conv],
        add_generation_prompt=True,
        bos_token="",
        eos_token="",
        **extra,
    )


@pytest.mark.parametrize("conv", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_phi35_renders_what_its_chat_template_renders(conv):
    assert render(PHI3, conv) == jinja("microsoft-Phi-3.5-mini-instruct.jinja", conv)


def test_phi35_leaves_an_empty_system_message_out():
    assert render(PHI3, [("system", ""), ("user", "Hi!")]) == "<|user|>\nHi!<|end|>\n<|assistant|>\n"


@pytest.mark.parametrize("conv", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_deepseek_r1_renders_what_the_distills_templates_render(conv):
    # the Llama-8B distill always opens the answer with <think>; the Qwen-32B distill's newer
    # template closes the block unless enable_thinking: both are Ollama's think on / unset / off
    llama8b = jinja("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", conv)
    assert render(DEEPSEEK_R1, conv) == llama8b
    assert render(DEEPSEEK_R1, conv, think=True) == llama8b
    qwen32b = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
    assert render(DEEPSEEK_R1, conv, think=True) == jinja(qwen32b, conv, enable_thinking=True)
    assert render(DEEPSEEK_R1, conv, think=False) == jinja(qwen32b, conv, enable_thinking=False)


def test_deepseek_r1_prompt_shape():
    conv = CONVERSATIONS["system, multi-turn"]
    assert render(DEEPSEEK_R1, conv, think=False) == (
        "Be brief.<｜User｜>Hi!<｜Assistant｜>Hello.<｜end▁of▁sentence｜>"
        "<｜User｜>2+2?<｜Assistant｜><think>\n</think>"
    )
    assert gotemplate.parse(DEEPSEEK_R1).thinking_tags() == ("<think>", "</think>")


# Gemma 3's format (ai.google.dev/gemma/docs/core/prompt-structure): no system turn; the system
# text and a blank line open the first user turn; the model's turns are "model".
GEMMA3_EXPECTED = {
    "one turn": "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n",
    "system": "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n",
    "multi-turn": (
        "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "system, multi-turn": (
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
    ),
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_gemma3_prompts(name):
    assert render(GEMMA3, CONVERSATIONS[name]) == GEMMA3_EXPECTED[name]


def test_gemma3_renders_what_gemma2s_chat_template_renders_without_a_system_message():
    # Gemma 2's published template is Gemma 3's for conversations without a system message
    for name in ("one turn", "multi-turn"):
        conv = CONVERSATIONS[name]
        assert render(GEMMA3, conv) == jinja("google-gemma-2-2b-it.jinja", conv)


# Phi-4's tokenizer_config template: <|im_start|>role<|im_sep|>text<|im_end|>
PHI4_EXPECTED = (
    "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi!<|im_end|>"
    "<|im_start|>assistant<|im_sep|>Hello.<|im_end|><|im_start|>user<|im_sep|>2+2?<|im_end|>"
    "<|im_start|>assistant<|im_sep|>"
)


def test_phi4_prompt():
    assert render(PHI4, CONVERSATIONS["system, multi-turn"]) == PHI4_EXPECTED


def _vocab(*tokens):
    return set(tokens).__contains__


R1_TEMPLATE = "{{'<｜Assistant｜><think>\\n'}}"


@pytest.mark.parametrize(
    "architecture, tokens, chat_template, family",
    [
        ("gemma3", ("<start_of_turn>", "<end_of_turn>"), None, "gemma3"),
        ("phi3", ("<|user|>", "<|assistant|>", "<|end|>"), None, "phi3"),
        ("phi3", ("<|im_start|>", "<|im_sep|>", "<|im_end|>"), None, "phi4"),
        # the R1 distills are qwen2 and llama files with DeepSeek's tokens
        ("qwen2", ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"), R1_TEMPLATE, "deepseek-r1"),
        ("deepseek2", ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"), None, "deepseek-r1"),
        # DeepSeek-V3.1's template closes the think block by default: the GGUF's own is kept
        ("deepseek2", ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"), "<think></think>", "gguf"),
    ],
)
def test_family_choice_for_the_new_families(architecture, tokens, chat_template, family):
    chosen = choose_family(architecture, _vocab(*tokens), chat_template)
    assert chosen.name == family
    if chosen.template is not None:
        gotemplate.parse(chosen.template)
        assert all(tokens.__contains__(s) for s in chosen.stop)  # every stop is a token


def test_thinking_families_expose_the_think_tags_ollama_infers():
    fam = choose_family("deepseek2", _vocab("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"), None)
    assert fam.thinking and gotemplate.parse(fam.template).thinking_tags() == ("<think>", "</think>")
    assert dict(fam.parameters) == {"temperature": 0.6, "top_p": 0.95}
    gemma = choose_family("gemma3", _vocab("<start_of_turn>", "<end_of_turn>"), None)
    assert dict(gemma.parameters) == {"temperature": 1.0, "top_k": 64, "top_p": 0.95}


@pytest.mark.parametrize(
    "architecture, tokens",
    [
        ("deepseek2", ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>")),
        ("gemma3", ("<start_of_turn>", "<end_of_turn>")),
        ("phi3", ("<|user|>", "<|assistant|>", "<|end|>")),
        ("phi3", ("<|im_start|>", "<|im_sep|>", "<|im_end|>")),
    ],
)
def test_package_verify_checks_pass_on_the_new_families(architecture, tokens, tmp_path):
    """What `edgekit package verify` checks of a template and its stops (thinking kept and
    toggled, every turn-ending token a stop) holds for each new family's own choice."""
    from edgekit.package.ollama import GgufFacts, _check_stops, _check_thinking

    ct = R1_TEMPLATE if architecture == "deepseek2" else None
    facts = GgufFacts(tmp_path / "m.gguf", architecture, None, "Q4_K_M", 1, ct, list(tokens), None, None)
    fam = choose_family(architecture, facts.has_token, ct)
    assert _check_thinking(facts, fam.template, True).ok
    [stops] = _check_stops(facts, fam.template, json.dumps({"stop": list(fam.stop)}), True)
    assert stops.ok, stops.detail
