"""The Go templates, rendered with edgekit's reader of Go's template subset, against the
prompts each family's own chat format produces."""

import json
from types import SimpleNamespace as NS

import pytest

from edgekit.errors import EdgekitError
from edgekit.package import gotemplate, templates
from edgekit.package.templates import CHATML, EMPTY_THINK, LLAMA3, QWEN3, choose_family


class Tool:
    def __init__(self, name):
        self.Function = NS(Name=name)

    def __str__(self):  # Ollama prints a tool as its JSON
        return json.dumps(
            {"type": "function", "function": {"name": self.Function.Name}}, separators=(",", ":")
        )


class Args(dict):
    def __str__(self):
        return json.dumps(self, separators=(",", ":"))


def msg(role, content="", thinking="", calls=()):
    return NS(Role=role, Content=content, Thinking=thinking, ToolCalls=list(calls))


def qwen(messages, system="", tools=(), think=None):
    values = {
        "System": system,
        "Tools": list(tools),
        "Messages": messages,
        "Think": bool(think),
        "IsThinkSet": think is not None,
    }
    return gotemplate.parse(QWEN3).render(values)


def test_qwen3_thinking_toggle_follows_enable_thinking():
    hi = [msg("user", "hi")]
    assert qwen(hi) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert qwen(hi, think=True) == qwen(hi)
    assert qwen(hi, think=False) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" + EMPTY_THINK
    # Ollama infers the thinking tags from the template: this is what keeps `think` working
    tpl = gotemplate.parse(QWEN3)
    assert tpl.thinking_tags() == ("<think>", "</think>")
    assert {"tools", "toolcalls", "isthinkset", "think", "messages"} <= tpl.identifiers()


def test_qwen3_tools_history_and_tool_responses():
    call = NS(Function=NS(Name="weather", Arguments=Args(city="Paris")))
    conv = [
        msg("system", "S"),
        msg("user", "a"),
        msg("assistant", "b", thinking="old"),
        msg("user", "c"),
        msg("assistant", "", thinking="plan", calls=[call, call]),
        msg("tool", "r1"),
        msg("tool", "r2"),
    ]
    got = qwen(conv, system="S", tools=[Tool("weather")])
    assert got == (
        "<|im_start|>system\nS\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type":"function","function":{"name":"weather"}}\n</tools>\n\n'
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n"  # thinking before the last user turn is dropped
        "<|im_start|>user\nc<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nplan\n</think>\n\n"
        '<tool_call>\n{"name": "weather", "arguments": {"city":"Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "weather", "arguments": {"city":"Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # a system prompt without tools, and a final assistant turn left open for Ollama to continue
    assert qwen([msg("user", "q"), msg("assistant", "par")], system="S") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\npar"
    )


def test_llama3_and_chatml_prompts():
    conv = [
        msg("system", "S"),
        msg("user", "hi"),
        msg("assistant", "yo"),
        msg("tool", "42"),
        msg("user", "ok"),
    ]
    # Llama 3.1's format: the date preamble always opens the prompt; a tool result is an
    # ipython turn holding the result as a JSON string, as the template's tojson writes it
    assert gotemplate.parse(LLAMA3).render({"System": "S", "Messages": conv, "Tools": []}) == (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
        '<|start_header_id|>ipython<|end_header_id|>\n\n"42"<|eot_id|>'
        "<|start_header_id|>user<|end_header_id|>\n\nok<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert gotemplate.parse(CHATML).render({"Messages": conv[:3]}) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo"
    )
    assert gotemplate.parse(CHATML).thinking_tags() == ("", "")


def test_template_reader_follows_go_semantics():
    r = lambda src, **data: gotemplate.parse(src).render(data)  # noqa: E731
    assert r("a  {{- .X -}}  b", X=1) == "a1b"
    assert r("{{ if and .A (not .B) }}y{{ else if .B }}b{{ else }}n{{ end }}", A="", B=[1]) == "b"
    assert r("{{ $n := 0 }}{{ range .L }}{{ $n = . }}{{ end }}{{ $n }}", L=[3, 4]) == "4"
    assert r("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ else }}empty{{ end }}", L=[]) == "empty"
    assert r('{{ len (slice .L 1) }} {{ eq .S "x" "y" }} {{ or "" "z" }}', L=[1, 2, 3], S="y") == "2 true z"
    assert r("{{/* a comment */}}{{ with .W }}{{ . }}{{ end }}", W="w") == "w"


@pytest.mark.parametrize(
    "src, error",
    [
        ("{{ if .X }}open", "missing {{ end }}"),
        ("{{ end }}", "unexpected"),
        ("{{ frobnicate .X }}", "function 'frobnicate' is not defined"),
        ("{{ .X ", "unclosed action"),
        ('{{ "unterminated }}', "unterminated string"),
        ('{{ template "x" }}', "not supported"),
    ],
)
def test_template_errors_are_one_line(src, error):
    with pytest.raises(gotemplate.TemplateError) as e:
        gotemplate.parse(src)
    assert error in e.value.one_line()


def _vocab(*tokens):
    return set(tokens).__contains__


def test_family_choice():
    chatml = _vocab("<|im_start|>", "<|im_end|>")
    llama3 = _vocab("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    q = choose_family("qwen3moe", chatml, None)
    assert (q.name, q.thinking, dict(q.parameters)) == (
        "qwen3",
        True,
        {"temperature": 0.6, "top_k": 20, "top_p": 0.95, "repeat_penalty": 1},
    )
    assert q.stop == ("<|im_start|>", "<|im_end|>")
    assert choose_family("llama", llama3, None).name == "llama3"
    assert choose_family("llama", chatml, "{{ x }}").name == "chatml"
    own = choose_family(
        "gemma3", _vocab("<end_of_turn>"), "{{ bos_token }}<think>", eos_token="<end_of_turn>"
    )
    assert (own.name, own.template, own.stop, own.thinking) == ("gguf", None, ("<end_of_turn>",), True)
    assert choose_family("phi3", chatml, None).name == "chatml"
    with pytest.raises(EdgekitError, match="no chat template for architecture 'phi3'"):
        choose_family("phi3", _vocab(), None)
    with pytest.raises(EdgekitError, match="qwen3 GGUF without"):
        choose_family("qwen3", _vocab(), None)


def test_default_system_prompt_is_read_from_the_chat_template():
    smol = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}"
    )
    assert (
        templates.default_system(smol)
        == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    assert templates.default_system("{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}") is None
    assert templates.default_system(None) is None
