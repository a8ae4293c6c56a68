"""What Ollama makes of a model's output when tools are offered: the tool calls it finds and the
text it passes on. Written from the behaviour of Ollama's generic tool parser (tools/tools.go, as
of v0.33) so that `edgekit package verify` can check, before anyone chats with the model, that a
family's native tool-call output comes back as calls and not as text.

The parser looks for the template's tool-call tag (`Template.tool_call_tag`); with the tag "{"
(no tag found in the template) only output that starts with a JSON object can be a call. After
the tag, each call is the first offered tool name that appears, then the first JSON object
after it; its arguments are the object's `arguments` (or `parameters`) when it names the tool
with `name`, else the object under the tool's name, else the object itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def parse_tool_calls(output: str, tag: str, tool_names: list[str]) -> tuple[list[ToolCall], str]:
    """(calls, content) as Ollama would return them for a complete `output`."""
    at = output.find(tag)
    before = output if at < 0 else output[:at]
    if tag in ("{", "[") and before.strip():
        return [], output
    if at < 0:
        return [], output
    rest = output[at:]
    calls: list[ToolCall] = []
    while True:
        found = _first_tool(rest, tool_names)
        if found is None:
            break
        name, name_end = found
        obj = _first_object(rest)
        if obj is None:
            break
        value, obj_end = obj
        args = _arguments(value, name)
        if args is None:  # {"name": ...} without arguments: Ollama finds no call in it
            break
        calls.append(ToolCall(name, args))
        rest = rest[max(name_end, obj_end) :]
    return calls, before


def _first_tool(text: str, names: list[str]) -> tuple[str, int] | None:
    """The tool name that appears first (the longest where two start at one place), and where
    it ends."""
    best: tuple[int, str] | None = None
    for name in names:
        pos = text.find(name)
        if pos < 0:
            continue
        if best is None or pos < best[0] or (pos == best[0] and len(name) > len(best[1])):
            best = (pos, name)
    return None if best is None else (best[1], best[0] + len(best[1]))


def _first_object(text: str) -> tuple[dict[str, Any], int] | None:
    """The first balanced {...} outside strings that decodes as a JSON object, and the index
    after it."""
    depth, start, in_string, escaped = 0, -1, False, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                try:
                    value = json.loads(text[start : i + 1])
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value, i + 1
    return None


def _as_object(v: Any) -> dict[str, Any] | None:
    if isinstance(v, dict):
        return v
    if isinstance(v, str):
        try:
            decoded = json.loads(v)
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _find_arguments(obj: dict[str, Any], tool: str) -> tuple[dict[str, Any] | None, bool]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            if (args := _as_object(obj.get(key))) is not None:
                return args, True
        return None, True
    if (args := _as_object(obj.get(tool))) is not None:
        return args, True
    for v in obj.values():
        children = v if isinstance(v, list) else [v]
        for child in children:
            if isinstance(child, dict):
                args, found = _find_arguments(child, tool)
                if found:
                    return args, True
    return None, False


def _arguments(obj: dict[str, Any], tool: str) -> dict[str, Any] | None:
    args, found = _find_arguments(obj, tool)
    return args if found else obj
