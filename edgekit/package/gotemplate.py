"""The part of Go's text/template that Ollama chat templates use: text, actions with trim
markers, if / else if / else, range (with `$i, $m :=`), with, variables, parenthesised
pipelines and the builtin functions. edgekit parses a template before Ollama sees it (a
syntax error would only surface on the user's first chat), infers the thinking tags the way
Ollama does, and renders templates in checks and tests. Anything outside that subset is
reported as unsupported, never guessed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError

_SPACE = " \t\r\n"
_PAREN = {("punct", "("): 1, ("punct", ")"): -1}
_MAX_PARENS = 100  # a bound on the parser's recursion (no real template comes near it)


class TemplateError(EdgekitError):
    """A template that does not parse or cannot be evaluated."""


# ---- tree ----------------------------------------------------------------------------------


@dataclass
class Text:
    text: str


@dataclass
class Operand:
    kind: str  # field | var | dot | str | num | bool | nil | func | pipe
    value: object = None
    path: tuple[str, ...] = ()  # field chain after the operand (.A.B)

    @property
    def sub(self) -> Pipe:
        """The pipeline of a `pipe` operand: (...)."""
        if not isinstance(self.value, Pipe):
            raise TemplateError(f"internal: {self.kind} operand has no pipeline")
        return self.value

    @property
    def name(self) -> str:
        """The function name of a `func` operand, the variable name of a `var` one."""
        return str(self.value)


@dataclass
class Pipe:
    decl: list[str] = field(default_factory=list)  # variables the pipeline declares or assigns
    declare: bool = True  # := (declare) or = (assign)
    cmds: list[list[Operand]] = field(default_factory=list)


@dataclass
class Action:
    pipe: Pipe


@dataclass
class Branch:
    kind: str  # if | range | with
    pipe: Pipe
    body: list
    orelse: list | None = None


@dataclass
class Template:
    source: str
    nodes: list

    def render(self, data: dict) -> str:
        out: list[str] = []
        try:
            _Renderer(data, out).run(self.nodes, data, [{"$": data}])
        except RecursionError:
            raise TemplateError("template nests too deeply to render") from None
        return "".join(out)

    def identifiers(self) -> set[str]:
        """Lower-cased field and variable names, as Ollama's template.Vars() lists them."""
        names: set[str] = set()
        for op in _operands(self.nodes):
            if op.kind == "field":
                names.update(p.lower() for p in op.path)
            elif op.kind == "var":
                names.add(str(op.value).lower())
                names.update(p.lower() for p in op.path)
        return names

    def thinking_tags(self) -> tuple[str, str]:
        """Ollama's heuristic for the tags around a thinking trace: the nearest list that
        holds a `.Thinking` reference inside a `range` over `.Messages`, and the text nodes
        that open and close that list. ("", "") when there is none."""
        tags = ["", ""]
        _infer_tags(self.nodes, [], tags)
        return tags[0], tags[1]

    def tool_call_tag(self) -> str:
        """The tag Ollama looks for in a model's output to find tool calls (tools/template.go):
        the first non-blank text inside the first `if` whose condition names a `.ToolCalls`
        field, cut before any `{` and stripped; "{" when there is none, and Ollama then takes
        only output that starts with a JSON object as a call."""
        node = _tool_calls_if(self.nodes)
        text = _first_text(node.body) if node is not None else None
        if text is None:
            return "{"
        return text.replace("\r\n", "\n").split("{", 1)[0].strip() or "{"


def parse(source: str) -> Template:
    try:
        items = _lex(source)
        nodes, end = _Parser(items).parse_list(top=True)
    except RecursionError:
        raise TemplateError("template nests too deeply") from None
    return Template(source, nodes)


# ---- lexing ---------------------------------------------------------------------------------


def _lex(src: str) -> list:
    """Split into ("text", str) and ("action", body) items, applying the trim markers."""
    items: list = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                items.append(("text", text))
            return items
        body_start = start + 2
        trim_left = (
            src.startswith("-", body_start) and body_start + 1 < len(src) and src[body_start + 1] in _SPACE
        )
        if trim_left:
            text = text.rstrip(_SPACE)
            body_start += 2
        if text:
            items.append(("text", text))
        end = _action_end(src, body_start)
        body = src[body_start:end]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE
        if trim_next:
            body = body[:-2]
        body = body.strip(_SPACE)
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(("action", body, _line(src, start)))
        pos = end + 2


def _action_end(src: str, pos: int) -> int:
    i = pos
    while i < len(src):
        c = src[i]
        if c in "\"`'":
            close = src.find(c, i + 1) if c == "`" else _string_end(src, i)
            if close < 0:
                raise TemplateError(f"template line {_line(src, i)}: unterminated string")
            i = close + 1
            continue
        if src.startswith("/*", i):
            close = src.find("*/", i + 2)
            if close < 0:
                raise TemplateError(f"template line {_line(src, i)}: unclosed comment")
            i = close + 2
            continue
        if src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"template line {_line(src, pos)}: unclosed action (missing '}}}}')")


def _string_end(src: str, i: int) -> int:
    quote = src[i]
    j = i + 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == quote:
            return j
        if src[j] == "\n":
            return -1
        j += 1
    return -1


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _tokens(body: str, line: int) -> list[tuple[str, object]]:
    toks: list[tuple[str, object]] = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c in _SPACE:
            i += 1
        elif c == '"':
            j = _string_end(body, i)
            if j < 0:
                raise TemplateError(f"template line {line}: unterminated string")
            try:
                toks.append(("str", json.loads(body[i : j + 1])))
            except ValueError:
                raise TemplateError(
                    f"template line {line}: unsupported escape in {body[i : j + 1]}"
                ) from None
            i = j + 1
        elif c == "`":
            j = body.find("`", i + 1)
            toks.append(("str", body[i + 1 : j]))
            i = j + 1
        elif body.startswith(":=", i):
            toks.append(("punct", ":="))
            i += 2
        elif c in "()|,=":
            toks.append(("punct", c))
            i += 1
        elif c == "." or c == "$":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "_."):
                j += 1
            word = body[i:j]
            if c == "$":
                name, _, rest = word.partition(".")
                toks.append(("var", (name, tuple(p for p in rest.split(".") if p))))
            elif word == ".":
                toks.append(("dot", None))
            else:
                toks.append(("field", tuple(word[1:].split("."))))
            i = j
        elif c.isdigit() or (c == "-" and i + 1 < n and body[i + 1].isdigit()):
            j = i + 1
            while j < n and (body[j].isdigit() or body[j] == "."):
                j += 1
            text = body[i:j]
            toks.append(("num", float(text) if "." in text else int(text)))
            i = j
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (body[j].isalnum() or body[j] == "_"):
                j += 1
            toks.append(("ident", body[i:j]))
            i = j
        else:
            raise TemplateError(f"template line {line}: unexpected character {c!r} in action")
    return toks


# ---- parsing --------------------------------------------------------------------------------

_FUNCS = {
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "slice",
    "index",
    "print",
    "json",
    "currentDate",
    "yesterdayDate",
    "toTypeScriptType",
}


class _Parser:
    def __init__(self, items: list):
        self.items = items
        self.i = 0
        self.pending_else: tuple[str, int] = ("", 0)

    def parse_list(self, top: bool = False) -> tuple[list, str | None]:
        """Nodes up to the `end` / `else` that closes this list (returned as the second value)."""
        nodes: list = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if item[0] == "text":
                nodes.append(Text(item[1]))
                continue
            body, line = item[1], item[2]
            word = body.split(None, 1)[0] if body else ""
            rest = body[len(word) :].strip(_SPACE)
            if word == "end":
                if top:
                    raise TemplateError(f"template line {line}: unexpected {{{{ end }}}}")
                return nodes, "end"
            if word == "else":
                if top:
                    raise TemplateError(f"template line {line}: unexpected {{{{ else }}}}")
                self.pending_else = (rest, line)
                return nodes, "else"
            if word in ("if", "range", "with"):
                nodes.append(self.branch(word, rest, line))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(
                    f"template line {line}: '{word}' is not supported by edgekit's template check"
                )
            else:
                nodes.append(Action(self.pipe(_tokens(body, line), line)))
        if not top:
            raise TemplateError("template ends inside an if/range/with block (missing {{ end }})")
        return nodes, None

    def branch(self, kind: str, rest: str, line: int) -> Branch:
        pipe = self.pipe(_tokens(rest, line), line)
        if not pipe.cmds:
            raise TemplateError(f"template line {line}: '{kind}' without a condition")
        body, closer = self.parse_list()
        node = Branch(kind, pipe, body)
        if closer == "else":
            rest, eline = self.pending_else
            if rest:
                word = rest.split(None, 1)[0]
                if word != "if" or kind != "if":
                    raise TemplateError(f"template line {eline}: 'else {word}' is not supported")
                # `else if` is an if nested in the else list that shares the outer `end`
                node.orelse = [self.branch("if", rest[2:].strip(_SPACE), eline)]
                return node
            node.orelse, closer = self.parse_list()
            if closer != "end":
                raise TemplateError(f"template line {eline}: a second {{{{ else }}}} in one block")
        return node

    def pipe(self, toks: list, line: int) -> Pipe:
        pipe = Pipe()
        k = 0
        # declarations: $x := ... or $i, $v := ... or $x = ...
        names = []
        j = 0
        while j < len(toks) and toks[j][0] == "var" and not toks[j][1][1]:
            names.append(toks[j][1][0])
            j += 1
            if j < len(toks) and toks[j] == ("punct", ","):
                j += 1
                continue
            break
        if names and j < len(toks) and toks[j][0] == "punct" and toks[j][1] in (":=", "="):
            pipe.decl, pipe.declare, k = names, toks[j][1] == ":=", j + 1
        cmd: list[Operand] = []
        while k < len(toks):
            kind, value = toks[k]
            if kind == "punct" and value == "|":
                if not cmd:
                    raise TemplateError(f"template line {line}: empty command in pipeline")
                pipe.cmds.append(cmd)
                cmd = []
                k += 1
            elif kind == "punct" and value == "(":
                depth, j = 1, k + 1
                while j < len(toks) and depth:
                    depth += _PAREN.get(toks[j], 0)
                    if depth > _MAX_PARENS:
                        raise TemplateError(
                            f"template line {line}: parentheses nested over {_MAX_PARENS} deep"
                        )
                    j += 1
                if depth:
                    raise TemplateError(f"template line {line}: unclosed '('")
                cmd.append(Operand("pipe", self.pipe(toks[k + 1 : j - 1], line)))
                k = j
            elif kind == "punct":
                raise TemplateError(f"template line {line}: unexpected '{value}'")
            else:
                cmd.append(self.operand(kind, value, line))
                k += 1
        if cmd:
            pipe.cmds.append(cmd)
        return pipe

    @staticmethod
    def operand(kind: str, value, line: int) -> Operand:
        if kind == "field":
            return Operand("field", path=value)
        if kind == "var":
            return Operand("var", value[0], value[1])
        if kind == "ident":
            if value in ("true", "false"):
                return Operand("bool", value == "true")
            if value == "nil":
                return Operand("nil")
            if value not in _FUNCS:
                raise TemplateError(f"template line {line}: function '{value}' is not defined")
            return Operand("func", value)
        return Operand(kind, value)


# ---- static analysis ------------------------------------------------------------------------


def _operands_of_pipe(pipe: Pipe):
    for cmd in pipe.cmds:
        for op in cmd:
            yield op
            if op.kind == "pipe":
                yield from _operands_of_pipe(op.sub)


def _operands(nodes: list):
    for n in nodes:
        if isinstance(n, Action):
            yield from _operands_of_pipe(n.pipe)
        elif isinstance(n, Branch):
            yield from _operands_of_pipe(n.pipe)
            yield from _operands(n.body)
            yield from _operands(n.orelse or [])


def _infer_tags(nodes: list, ranges: list[Branch], tags: list[str]) -> None:
    """Walk in Go's order (pipeline, body, else). A `.Thinking` field under a range over
    `.Messages` sets the tags from the list it sits in; the last such reference wins."""

    def visit_pipe(pipe: Pipe, enclosing: list) -> None:
        for op in _operands_of_pipe(pipe):
            if op.kind == "field" and op.path and op.path[0] == "Thinking" and ranges:
                if any(
                    o.kind == "field" and o.path and o.path[0] == "Messages"
                    for o in _operands_of_pipe(ranges[-1].pipe)
                ):
                    if isinstance(enclosing[0], Text):
                        tags[0] = enclosing[0].text.strip(_SPACE)
                    if isinstance(enclosing[-1], Text):
                        tags[1] = enclosing[-1].text.strip(_SPACE)

    for n in nodes:
        if isinstance(n, Action):
            visit_pipe(n.pipe, nodes)
        elif isinstance(n, Branch):
            visit_pipe(n.pipe, nodes)
            inner = ranges + [n] if n.kind == "range" else ranges
            if n.body:
                _infer_tags(n.body, inner, tags)
            if n.orelse:
                _infer_tags(n.orelse, ranges, tags)


def _tool_calls_if(nodes: list) -> Branch | None:
    """The first `if` in document order whose pipeline's commands have a `.ToolCalls` field as
    an argument (a variable such as `$m.ToolCalls`, or a field inside parentheses, does not
    count, as in Go's parse tree walk Ollama does)."""
    for n in nodes:
        if not isinstance(n, Branch):
            continue
        if n.kind == "if" and any(
            op.kind == "field" and "ToolCalls" in op.path for cmd in n.pipe.cmds for op in cmd
        ):
            return n
        for inner in (n.body, n.orelse or []):
            if (found := _tool_calls_if(inner)) is not None:
                return found
    return None


def _first_text(nodes: list) -> str | None:
    """The first text that is not only whitespace, depth first; a nested if / range / with
    ends the search when neither of its lists has one."""
    for n in nodes:
        if isinstance(n, Text):
            if n.text.strip():
                return n.text
        elif isinstance(n, Branch):
            return _first_text(n.body) or (_first_text(n.orelse) if n.orelse else None)
    return None


# ---- rendering ------------------------------------------------------------------------------


def truthy(v) -> bool:
    """Go's notion of true: not false, 0, nil, or an empty string, slice or map."""
    if v is None or v is False:
        return False
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | tuple | dict):
        return len(v) > 0
    return True


def _text(v) -> str:
    if v is None:
        return "<no value>"
    if v is True or v is False:
        return "true" if v else "false"
    return str(v)


class _Renderer:
    def __init__(self, root: dict, out: list[str]):
        self.root = root
        self.out = out

    def run(self, nodes: list, dot, scopes: list[dict]) -> None:
        for n in nodes:
            if isinstance(n, Text):
                self.out.append(n.text)
            elif isinstance(n, Action):
                value = self.pipe(n.pipe, dot, scopes)
                if not n.pipe.decl:
                    self.out.append(_text(value))
            elif n.kind == "if":
                inner = scopes + [{}]
                if truthy(self.pipe(n.pipe, dot, inner)):
                    self.run(n.body, dot, inner)
                elif n.orelse is not None:
                    self.run(n.orelse, dot, scopes + [{}])
            elif n.kind == "with":
                inner = scopes + [{}]
                value = self.pipe(n.pipe, dot, inner)
                if truthy(value):
                    self.run(n.body, value, inner)
                elif n.orelse is not None:
                    self.run(n.orelse, dot, scopes + [{}])
            else:
                self.range(n, dot, scopes)

    def range(self, n: Branch, dot, scopes: list[dict]) -> None:
        decl = n.pipe.decl
        seq = self.pipe(Pipe(cmds=n.pipe.cmds), dot, scopes)
        if seq is None:
            seq = []
        if isinstance(seq, dict):
            pairs = sorted(seq.items())
        elif isinstance(seq, list | tuple):
            pairs = list(enumerate(seq))
        else:
            raise TemplateError(f"range can't iterate over {type(seq).__name__}")
        if not pairs:
            if n.orelse is not None:
                self.run(n.orelse, dot, scopes + [{}])
            return
        for key, value in pairs:
            frame: dict = {}
            if len(decl) == 1:
                frame[decl[0]] = value
            elif len(decl) == 2:
                frame[decl[0]], frame[decl[1]] = key, value
            self.run(n.body, value, scopes + [frame])

    def pipe(self, pipe: Pipe, dot, scopes: list[dict]):
        value = None
        for i, cmd in enumerate(pipe.cmds):
            value = self.command(cmd, dot, scopes, [value] if i else [])
        if pipe.decl:
            if pipe.declare:
                scopes[-1][pipe.decl[-1]] = value
            else:
                for frame in reversed(scopes):
                    if pipe.decl[-1] in frame:
                        frame[pipe.decl[-1]] = value
                        break
                else:
                    raise TemplateError(f"undefined variable {pipe.decl[-1]}")
        return value

    def command(self, cmd: list[Operand], dot, scopes: list[dict], piped: list):
        head = cmd[0]
        if head.kind == "func":
            return self.call(head.name, cmd[1:], dot, scopes, piped)
        if len(cmd) > 1 or piped:
            raise TemplateError("can't give arguments to a non-function")
        return self.operand(head, dot, scopes)

    def operand(self, op: Operand, dot, scopes: list[dict]):
        if op.kind == "field":
            return self.fields(dot, op.path)
        if op.kind == "dot":
            return dot
        if op.kind == "var":
            for frame in reversed(scopes):
                if op.value in frame:
                    return self.fields(frame[op.value], op.path)
            raise TemplateError(f"undefined variable {op.value}")
        if op.kind == "pipe":
            return self.pipe(op.sub, dot, scopes)
        if op.kind == "func":
            return self.call(op.name, [], dot, scopes, [])
        return op.value  # str, num, bool, nil

    @staticmethod
    def fields(value, path: tuple[str, ...]):
        for name in path:
            if value is None:
                raise TemplateError(f"nil pointer evaluating .{name}")
            if isinstance(value, dict):
                value = value.get(name)
            elif hasattr(value, name):
                value = getattr(value, name)
            else:
                raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
        return value

    def call(self, name: str, args: list[Operand], dot, scopes: list[dict], piped: list):
        # Go's template reports a function given the wrong arguments as an execution error
        try:
            return self._call(name, args, dot, scopes, piped)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            msg = " ".join(str(e).split())[:120]
            raise TemplateError(f"error calling {name}: {type(e).__name__}: {msg}") from None

    def _call(self, name: str, args: list[Operand], dot, scopes: list[dict], piped: list):
        value: Any = None
        if name in ("and", "or"):
            for arg in args + [Operand("value", v) for v in piped]:
                value = arg.value if arg.kind == "value" else self.operand(arg, dot, scopes)
                if truthy(value) != (name == "and"):
                    return value
            return value
        vals = [self.operand(a, dot, scopes) for a in args] + piped
        if name == "not":
            return not truthy(vals[0])
        if name == "eq":
            return any(vals[0] == v for v in vals[1:])
        if name == "ne":
            return vals[0] != vals[1]
        if name in ("lt", "le", "gt", "ge"):
            a, b = vals
            return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name]
        if name == "len":
            return len(vals[0]) if vals[0] is not None else 0
        if name == "slice":
            seq = vals[0]
            return seq[vals[1] : vals[2]] if len(vals) > 2 else seq[vals[1] :] if len(vals) > 1 else seq
        if name == "index":
            value = vals[0]
            for k in vals[1:]:
                value = value.get(k) if isinstance(value, dict) else value[k]
            return value
        if name == "print":
            return "".join(_text(v) for v in vals)
        if name == "json":
            # Go's json.Marshal: compact, UTF-8 kept, <>& and U+2028/U+2029 escaped
            text = json.dumps(vals[0], separators=(",", ":"), ensure_ascii=False, default=str)
            for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
                text = text.replace(ch, esc)
            return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        if name in ("currentDate", "yesterdayDate"):
            import datetime

            day = datetime.date.today() - datetime.timedelta(days=1 if name == "yesterdayDate" else 0)
            return day.isoformat()
        return "any"  # toTypeScriptType
