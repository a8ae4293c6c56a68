"""Tool calls through Ollama: the tag Ollama derives from a template, and what its parser makes of
a model's native tool-call output with that tag."""

import json
from types import SimpleNamespace as NS

import pytest

from edgekit.errors import EdgekitError
from edgekit.package import gotemplate, ollama, templates
from edgekit.package.templates import QWEN3, QWEN3_TOOL_CALL, choose_family
from edgekit.package.toolcalls import ToolCall, parse_tool_calls

# the Qwen3 template as edgekit wrote it before: calls only under a range, so Ollama found no
# tag and fell back to "{"
QWEN3_RANGE_ONLY = QWEN3.replace(
    """{{- if .ToolCalls }}{{ range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
<tool_call>{{ else }}<tool_call>{{ end }}""",
    """{{- range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>""",
).replace("</tool_call>{{ end }}{{ end }}", "</tool_call>{{ end }}")


@pytest.mark.parametrize(
    "source, tag",
    [
        (QWEN3, "<tool_call>"),
        (QWEN3_RANGE_ONLY, "{"),
        (
            "{{ if .ToolCalls }}[TOOL_CALLS] {{ range .ToolCalls }}{{ json . }}{{ end }}{{ end }}",
            "[TOOL_CALLS]",
        ),
        # the tag is cut before a "{" and stripped; a tag-less JSON call gives "{"
        ('{{ if .ToolCalls }}\n  {"name": {{ end }}', "{"),
        # a variable ($m.ToolCalls) is not the field Ollama looks for
        ("{{ range $m := .Messages }}{{ if $m.ToolCalls }}<x>{{ end }}{{ end }}", "{"),
        # the search for the text stops at a nested block with none
        ("{{ if .ToolCalls }}{{ if .A }} {{ end }}<tool_call>{{ end }}", "{"),
        ("{{ if .A }}{{ else if .ToolCalls }}<call>{{ end }}", "<call>"),
    ],
)
def test_tool_call_tag_is_derived_as_ollama_derives_it(source, tag):
    assert gotemplate.parse(source).tool_call_tag() == tag


def test_qwen3_native_output_parses_to_one_call_with_the_derived_tag():
    tag = gotemplate.parse(QWEN3).tool_call_tag()
    calls, content = parse_tool_calls("Let me check.\n" + QWEN3_TOOL_CALL, tag, ["get_weather", "get"])
    assert calls == [ToolCall("get_weather", {"city": "Paris"})] and content == "Let me check.\n"
    two = QWEN3_TOOL_CALL + "\n" + QWEN3_TOOL_CALL.replace("Paris", "Oslo")
    assert [c.arguments["city"] for c in parse_tool_calls(two, tag, ["get_weather"])[0]] == ["Paris", "Oslo"]
    # the failure the old template caused: with "{" the tag-led output is text, no call
    assert parse_tool_calls(QWEN3_TOOL_CALL, "{", ["get_weather"]) == ([], QWEN3_TOOL_CALL)


@pytest.mark.parametrize(
    "output, calls",
    [
        ('{"name": "f", "arguments": {"x": 1}}', [ToolCall("f", {"x": 1})]),
        ('{"name": "f", "arguments": "{\\"x\\": 2}"}', [ToolCall("f", {"x": 2})]),  # arguments as a string
        ('{"name": "f", "parameters": {"x": 3}}', [ToolCall("f", {"x": 3})]),
        ('{"f": {"x": 4}}', [ToolCall("f", {"x": 4})]),
        ('{"name": "f"}', []),  # no arguments object: Ollama finds no call
        ('text first {"name": "f", "arguments": {}}', []),  # "{" tags need a leading object
        ('{"name": "g", "arguments": {}}', []),  # not an offered tool
    ],
)
def test_parser_cases_with_the_json_tag(output, calls):
    assert parse_tool_calls(output, "{", ["f"])[0] == calls


def test_qwen3_template_still_renders_tool_calls_as_qwen_does():
    call = NS(Function=NS(Name="weather", Arguments=json.dumps({"city": "Paris"})))
    for content, joiner in (("", ""), ("Sure.", "\n")):
        conv = [
            NS(Role="user", Content="a", Thinking="", ToolCalls=[]),
            NS(Role="assistant", Content=content, Thinking="", ToolCalls=[call, call]),
            NS(Role="user", Content="b", Thinking="", ToolCalls=[]),
        ]
        out = gotemplate.parse(QWEN3).render(
            {"System": "", "Tools": [], "Messages": conv, "Think": False, "IsThinkSet": False}
        )
        one = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        assert f"<|im_start|>assistant\n{content}{joiner}{one}\n{one}<|im_end|>\n" in out


def test_a_template_that_loses_tool_calls_fails_the_check_with_one_line():
    fam = choose_family("qwen3", {"<|im_start|>", "<|im_end|>"}.__contains__, None)
    assert ollama.check_tool_calls(fam, fam.template or "").ok
    bad = ollama.check_tool_calls(fam, QWEN3_RANGE_ONLY)
    assert not bad.ok and "qwen3" in bad.detail and "'{'" in bad.detail and "\n" not in bad.detail


def test_package_refuses_a_family_template_that_would_lose_tool_calls(monkeypatch, tmp_path):
    """The check runs before `package ollama` writes anything: a qwen3 GGUF whose family
    template loses tool calls is refused with one line, and no Modelfile appears."""
    from tests.package.conftest import write_gguf

    gguf = write_gguf(tmp_path / "q.gguf", arch="qwen3")
    assert ollama.plan_package(gguf, "q:1").family.tool_tag == "<tool_call>"
    monkeypatch.setattr(templates, "QWEN3", QWEN3_RANGE_ONLY)
    with pytest.raises(EdgekitError, match="would look for tool calls after '{'") as e:
        ollama.plan_package(gguf, "q:1")
    assert "\n" not in e.value.one_line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.gguf"]
