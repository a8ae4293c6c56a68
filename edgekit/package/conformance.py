"""The conformance gate: before a package is written (`package ollama`) and when one is checked
(`package verify`), a fixed conversation suite is rendered twice — through the Modelfile
TEMPLATE as Ollama fills and renders it (edgekit's Go-template renderer, Ollama's template
values: collated messages, Go-JSON tools and arguments, `think` unset meaning on for a thinking
model) and through the model's own Jinja chat_template as transformers renders it
(jinja_chat) — and the prompts must be byte-identical, or differ only in a listed difference.
The gate also derives the tool-call tag as Ollama does and parses the family's native
tool-call output with it, checks that the token closing an answer is a stop token of the
vocabulary, and that the params decode under a strict JSON decoder.

Listed differences (each applied only where it occurs, and reported):
- json: Ollama writes tool definitions and call arguments with Go's encoding/json (compact,
  struct field order, sorted map keys, <>& escaped); the template with its tojson. The JSON
  values are compared after decoding, as Ollama's own library templates accept.
- bos: the template writes the BOS text; llama.cpp adds the BOS token itself when the GGUF's
  tokenizer.ggml.add_bos_token is set, so the TEMPLATE leaves it out.
- date: Llama 3.2's template writes today's date (strftime_now, "%d %b %Y"); Ollama's Go
  templates cannot format a date that way (currentDate is YYYY-MM-DD), so the TEMPLATE writes
  the template's own fallback date, 26 Jul 2024.
- think-default: Ollama turns thinking on when a request leaves `think` unset for a thinking
  model (server/routes.go); a template whose own default is off (DeepSeek-R1-Distill-Qwen-32B)
  is compared with enable_thinking=True for that case.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgekit.package import gotemplate, jinja_chat, toolcalls
from edgekit.package.ollama_store import go_json

# ---- the suite -------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    },
}
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


@dataclass(frozen=True)
class Msg:
    role: str
    content: str = ""
    thinking: str = ""
    calls: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    messages: tuple[Msg, ...]
    tools: bool = False
    think: bool | None = None


SYSTEM = Msg("system", "You are a concise assistant.")
SUITE = (
    Case("system prompt", (SYSTEM, Msg("user", "Hi!"))),
    Case("no system prompt", (Msg("user", "Hi!"),)),
    Case(
        "multi-turn",
        (SYSTEM, Msg("user", "Hi!"), Msg("assistant", "Hello."), Msg("user", "What is 2+2?")),
    ),
    Case("thinking unset", (Msg("user", "What is 2+2?"),), think=None),
    Case("thinking on", (Msg("user", "What is 2+2?"),), think=True),
    Case("thinking off", (Msg("user", "What is 2+2?"),), think=False),
    Case("tool definitions", (SYSTEM, Msg("user", "Weather in Paris?")), tools=True),
    Case(
        "tool call and result",
        (
            Msg("user", "Weather in Paris?"),
            Msg("assistant", "", thinking="The user wants the weather.", calls=(CALL,)),
            Msg("tool", "18 degrees, sunny"),
        ),
        tools=True,
    ),
    Case(
        "answer after a tool result",
        (
            Msg("user", "Weather in Paris?"),
            Msg("assistant", "", calls=(CALL,)),
            Msg("tool", "18 degrees, sunny"),
            Msg("assistant", "It is 18 degrees and sunny."),
            Msg("user", "Thanks!"),
        ),
        tools=True,
    ),
)
STOP_CASE = "stop token"
ANSWER = "Hello."  # the multi-turn case's answer, closed by the end-of-turn token


# ---- Ollama's side: template values as template.Execute builds them ---------------------------


class GoMap(dict):
    """A Go map in a template: printed as encoding/json prints it (sorted keys)."""

    def __str__(self) -> str:
        return go_json(dict(self), sort_keys=True).decode().rstrip("\n")


class GoStruct:
    """A Go struct: fields by name; printed as its JSON form when it has one."""

    def __init__(self, json_form: Any = None, **fields: Any):
        self.__dict__.update(fields)
        self._json = json_form

    def __str__(self) -> str:
        return go_json(self._json).decode().rstrip("\n")


def _go_tool(tool: dict) -> GoStruct:
    """template.templateTool: type, items, function{name, description, parameters{type, $defs,
    items, required, properties}} with properties a map (sorted) of ToolProperty."""
    fn, params = tool["function"], tool["function"].get("parameters") or {}
    prop_keys = ("anyOf", "type", "items", "description", "enum", "properties", "required")
    props = {
        k: {f: v[f] for f in prop_keys if v.get(f) not in (None, "", [])}
        for k, v in sorted((params.get("properties") or {}).items())
    }
    p_json: dict = {"type": params.get("type", "")}
    if params.get("required"):
        p_json["required"] = params["required"]
    p_json["properties"] = props
    j = {
        "type": tool.get("type", ""),
        "function": {"name": fn["name"], "description": fn.get("description", ""), "parameters": p_json},
    }
    parameters = GoStruct(
        p_json, Type=p_json["type"], Required=params.get("required"), Properties=GoMap(props)
    )
    function = GoStruct(
        j["function"], Name=fn["name"], Description=fn.get("description", ""), Parameters=parameters
    )
    return GoStruct(j, Type=j["type"], Function=function)


def ollama_values(case: Case, thinking_model: bool) -> dict:
    """What Ollama passes its template for this conversation: consecutive messages of one
    role (tool results apart) merged with a blank line, every system message's text joined
    into .System, and `think` unset meaning on for a model with the thinking capability."""
    merged: list[dict] = []
    for m in case.messages:
        if merged and merged[-1]["Role"] == m.role and m.role != "tool":
            merged[-1]["Content"] += "\n\n" + m.content
            continue
        calls = [
            GoStruct(ID="", Function=GoStruct(Index=i, Name=c["name"], Arguments=GoMap(c["arguments"])))
            for i, c in enumerate(m.calls)
        ]
        merged.append(
            {
                "Role": m.role,
                "Content": m.content,
                "Thinking": m.thinking,
                "ToolCalls": calls,
                "Images": [],
                "ToolName": "",
                "ToolCallID": "",
            }
        )
    think = case.think
    if think is None and thinking_model:
        think = True
    return {
        "System": "\n\n".join(m.content for m in case.messages if m.role == "system"),
        "Messages": [GoStruct(**m) for m in merged],
        "Tools": [_go_tool(WEATHER_TOOL)] if case.tools else [],
        "Response": "",
        "Think": bool(think),
        "ThinkLevel": "" if think is None else ("high" if think else ""),
        "IsThinkSet": think is not None,
    }


def jinja_messages(case: Case) -> list[dict]:
    """The conversation as a chat template takes it (OpenAI/transformers shape): thinking as
    reasoning_content, calls as tool_calls with arguments as objects."""
    out = []
    for m in case.messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.thinking:
            d["reasoning_content"] = m.thinking
        if m.calls:
            d["tool_calls"] = [{"type": "function", "function": dict(c)} for c in m.calls]
        out.append(d)
    return out


# ---- comparing ------------------------------------------------------------------------------


def _canonical_json(text: str) -> str:
    """Every decodable JSON object in the text rewritten compactly with sorted keys."""
    dec = json.JSONDecoder()
    out, i = [], 0
    while True:
        j = text.find("{", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        try:
            value, end = dec.raw_decode(text, j)
        except ValueError:
            out.append(text[i : j + 1])
            i = j + 1
            continue
        out.append(text[i:j] + json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False))
        i = end


_DATE = re.compile(r"Today Date: \d{2} [A-Z][a-z]{2} \d{4}")
FALLBACK_DATE = "26 Jul 2024"


def differences_needed(go: str, ref: str, bos: str | None) -> tuple[str, str, list[str]]:
    """(go, ref) after the listed differences that apply here, and their names."""
    used: list[str] = []
    if bos and ref.startswith(bos) and not go.startswith(bos):
        ref, used = ref[len(bos) :], used + ["bos"]
    dated = _DATE.sub("Today Date: " + FALLBACK_DATE, ref)
    if dated != ref and go != ref:
        ref, used = dated, used + ["date"]
    if go != ref:
        g, r = _canonical_json(go), _canonical_json(ref)
        if (g, r) != (go, ref) and g == r:
            go, ref, used = g, r, used + ["json"]
    return go, ref, used


def first_difference(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, i - 20)
    return f"at character {i}: TEMPLATE {a[lo : i + 30]!r} vs chat template {b[lo : i + 30]!r}"


# ---- the gate -------------------------------------------------------------------------------


@dataclass
class GateResult:
    family: str
    ok: bool
    detail: str  # one line: what passed, or the first failing case
    cases: list[dict] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "ok": self.ok,
            "detail": self.detail,
            "cases": self.cases,
            "differences": self.differences,
        }


def _fail(family: str, case: str, why: str, cases: list[dict]) -> GateResult:
    return GateResult(family, False, f"{family}: case '{case}': {why}", cases)


def chat_template_has_tools(chat_template: str) -> bool:
    """Ollama's test of a GGUF chat template for tool support (server/images.go)."""
    return "tools" in chat_template or "tool_call" in chat_template


def chat_template_has_thinking(chat_template: str) -> bool:
    """Ollama's test for thinking support (server/images.go)."""
    if "<think>" in chat_template and "</think>" in chat_template:
        return True
    split = "content.split('</think>')" in chat_template or 'content.split("</think>")' in chat_template
    return split and "reasoning_content" not in chat_template and "<SPECIAL_12>" not in chat_template


def run_gate(
    family,
    template: str,
    chat_template: str | None,
    has_token,
    stops: list[str],
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_bos: bool = False,
    now=None,
    system: str | None = None,
) -> GateResult:
    """The suite through `template` (Go) and `chat_template` (Jinja), the tool-call tag and the
    native call, and the stop token that closes an answer."""
    name = family.name
    cases: list[dict] = []
    try:
        tpl = gotemplate.parse(template)
    except gotemplate.TemplateError as e:
        return _fail(name, "parse", f"the TEMPLATE does not parse: {e.one_line()}", cases)
    names = tpl.identifiers()
    go_tools = "tools" in names
    go_thinking = tpl.thinking_tags() != ("", "")
    # what the template offers against what the model's own template offers
    if chat_template:
        if chat_template_has_tools(chat_template) and family.tool_tag and not go_tools:
            return _fail(
                name,
                "tool definitions",
                "the TEMPLATE loses the tools the model's chat template offers",
                cases,
            )
        if family.thinking and chat_template_has_thinking(chat_template) and not go_thinking:
            return _fail(
                name, "thinking on", "the TEMPLATE loses thinking: Ollama infers no think tags from it", cases
            )
    specials = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}
    stamp = now or datetime.now
    used: set[str] = set()
    for case in SUITE:
        if case.tools and not family.tool_tag:
            cases.append({"case": case.name, "result": "skipped: the family offers no tool calls"})
            continue
        if case.think is True and not family.thinking:
            cases.append(
                {"case": case.name, "result": "skipped: Ollama refuses think on a model without thinking"}
            )
            continue
        try:
            go = tpl.render(ollama_values(_with_system(case, system), family.thinking))
        except gotemplate.TemplateError as e:
            return _fail(name, case.name, f"the TEMPLATE fails to render: {e.one_line()}", cases)
        if not chat_template:
            cases.append({"case": case.name, "result": "rendered (no chat template to compare with)"})
            continue
        if case.think is False and family.thinking and "enable_thinking" not in chat_template:
            cases.append({"case": case.name, "result": "skipped: the chat template has no thinking switch"})
            continue
        kwargs: dict[str, Any] = {}
        if case.think is not None:
            kwargs["enable_thinking"] = case.think
        msgs = jinja_messages(case)
        tools = [WEATHER_TOOL] if case.tools else None
        try:
            ref = jinja_chat.render(chat_template, msgs, tools, special_tokens=specials, now=stamp, **kwargs)
        except jinja_chat.ChatTemplateError as e:
            cases.append({"case": case.name, "result": f"skipped: {e.one_line()}"})
            continue
        g, r, diff = differences_needed(go, ref, bos_token if add_bos else None)
        if g != r and case.think is None and family.thinking and "enable_thinking" in chat_template:
            on = jinja_chat.render(
                chat_template, msgs, tools, special_tokens=specials, now=stamp, enable_thinking=True
            )
            g, r, diff = differences_needed(go, on, bos_token if add_bos else None)
            diff = diff + ["think-default"]
        if g != r:
            return _fail(name, case.name, "the prompts differ " + first_difference(g, r), cases)
        used.update(diff)
        cases.append(
            {"case": case.name, "result": "identical" + (f" (listed: {', '.join(diff)})" if diff else "")}
        )
    # the token that closes an answer must be a stop token of the vocabulary
    multi = next(c for c in SUITE if c.name == "multi-turn")
    go = tpl.render(ollama_values(multi, family.thinking))
    at = go.find(ANSWER)
    closer = re.match(r"\s*(<[^<>\s]+>)", go[at + len(ANSWER) :]) if at >= 0 else None
    if closer is None:
        return _fail(name, STOP_CASE, "no special token closes the assistant's answer in the prompt", cases)
    token = closer.group(1)
    if token not in stops:
        return _fail(name, STOP_CASE, f"the answer is closed by {token} but it is not a stop", cases)
    if not has_token(token):
        return _fail(name, STOP_CASE, f"the stop {token} is not a token of the vocabulary", cases)
    cases.append({"case": STOP_CASE, "result": f"{token} closes an answer and is a stop token"})
    # tool calls: the tag Ollama derives, and the family's own output parsed with it
    if family.tool_tag:
        tag = tpl.tool_call_tag()
        if tag != family.tool_tag:
            return _fail(
                name,
                "tool call",
                f"Ollama would look for tool calls after {tag!r}, but the model writes {family.tool_tag!r}",
                cases,
            )
        calls, _ = toolcalls.parse_tool_calls(family.tool_call_sample or "", tag, ["get_weather"])
        if len(calls) != 1 or calls[0].arguments != {"city": "Paris"}:
            return _fail(
                name, "tool call", f"the model's native tool call parses to {len(calls)} calls", cases
            )
        cases.append({"case": "native tool call", "result": f"tag {tag!r}, parsed to one call"})
    ran = sum(1 for c in cases if not c["result"].startswith("skipped"))
    listed = sorted(used)
    detail = f"{name}: {ran} cases pass" + (f" (listed differences: {', '.join(listed)})" if listed else "")
    if not chat_template:
        detail += "; the GGUF has no chat template to compare with"
    return GateResult(name, True, detail, cases, listed)


def _with_system(case: Case, system: str | None) -> Case:
    """Ollama puts the Modelfile's SYSTEM first when a conversation opens without one."""
    if not system or (case.messages and case.messages[0].role == "system"):
        return case
    return Case(case.name, (Msg("system", system), *case.messages), case.tools, case.think)


def strict_params(text: str) -> dict:
    """The params blob under a strict JSON decoder: no NaN/Infinity, no repeated keys, an object."""

    def no_constant(c: str):
        raise ValueError(f"{c} is not JSON")

    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("a repeated key")
        return dict(pairs)

    value = json.loads(text, parse_constant=no_constant, object_pairs_hook=no_repeats)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
