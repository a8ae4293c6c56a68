"""Ollama Modelfiles: the model, a writer, and a parser written from Ollama's documentation
(docs/modelfile.mdx): `INSTRUCTION arguments` lines, instructions case-insensitive, `#`
comments, `PARAMETER <name> <value>`, `MESSAGE <role> <text>`, and values that span lines in
quotes — `\"\"\"...\"\"\"` (or `"..."`) — with everything else running to the end of the line."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from edgekit.errors import EdgekitError

INSTRUCTIONS = ("from", "parameter", "template", "system", "adapter", "license", "message", "requires")
MESSAGE_ROLES = ("system", "user", "assistant")

# Ollama's runtime options (api.Options and api.Runner) and the JSON type each is stored as.
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "use_mmap": bool,
    "num_thread": int,
    "draft_num_predict": int,
    "num_keep": int,
    "seed": int,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_last_n": int,
    "temperature": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "stop": list,
}


class ModelfileError(EdgekitError):
    """A Modelfile that does not parse, or a value a Modelfile cannot hold."""


@dataclass
class Modelfile:
    from_: str
    template: str | None = None
    system: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)  # in order; `stop` may repeat
    licenses: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    requires: str | None = None

    def parameters_json(self) -> dict:
        """The parameters as Ollama stores them (the params layer, /api/create): typed values,
        `stop` as a list."""
        return typed_parameters(self.parameters)

    def render(self, header: str | None = None) -> str:
        lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
        lines.append(f"FROM {_plain(self.from_, 'FROM')}")
        if self.template is not None:
            lines.append(f"TEMPLATE {_block(self.template, 'TEMPLATE')}")
        if self.system is not None:
            lines.append(f"SYSTEM {_block(self.system, 'SYSTEM')}")
        for name, value in self.parameters:
            lines.append(f"PARAMETER {name} {_param(value, name)}")
        for text in self.licenses:
            lines.append(f"LICENSE {_block(text, 'LICENSE')}")
        lines += [f"ADAPTER {_plain(a, 'ADAPTER')}" for a in self.adapters]
        lines += [f"MESSAGE {role} {_block(text, 'MESSAGE')}" for role, text in self.messages]
        if self.requires:
            lines.append(f"REQUIRES {_plain(self.requires, 'REQUIRES')}")
        return "\n".join(lines) + "\n"


def typed_parameters(pairs: list[tuple[str, str]]) -> dict:
    out: dict = {}
    for name, raw in pairs:
        kind = PARAMETER_TYPES.get(name)
        if kind is None:
            raise ModelfileError(
                f"unknown Ollama parameter '{name}'", f"known: {', '.join(sorted(PARAMETER_TYPES))}"
            )
        if kind is list:
            out.setdefault(name, []).append(raw)
            continue
        out[name] = _typed(name, raw, kind)
    return out


# Ollama parses a PARAMETER with Go's strconv (ParseBool; ParseInt base 10, 64 bits; ParseFloat
# 32 bits) and stores it as JSON, which holds no NaN or infinity: a value it would refuse, or
# one JSON cannot carry, is refused here, before anything is written. Numbers are taken in
# plain ASCII decimal notation (Python's int()/float() would also take "1_000", " 5", "١٢",
# "inf" and "nan", which Go refuses or JSON cannot hold).
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_FLOAT32_MAX = 3.4028234663852886e38
_INT64 = 2**63


def _typed(name: str, raw: str, kind: type) -> bool | int | float:
    what = {bool: "true or false", int: "a whole number", float: "a finite number"}[kind]
    bad = ModelfileError(f"parameter {name}: {raw!r} is not {what}, as Ollama reads it")
    if kind is bool:
        if raw not in _GO_BOOLS:
            raise bad
        return _GO_BOOLS[raw]
    if kind is int:
        if not _INT.fullmatch(raw) or not -_INT64 <= int(raw) < _INT64:
            raise bad
        return int(raw)
    if not _FLOAT.fullmatch(raw):
        raise bad
    number = float(raw)
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise ModelfileError(f"parameter {name}: {raw!r} is out of range for Ollama (a 32-bit float)")
    # Go writes a whole float without a fraction (1, not 1.0)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def format_value(value) -> str:
    """A typed parameter value as Modelfile text."""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


# ---- writing --------------------------------------------------------------------------------


def _check_text(text: str, what: str) -> None:
    if '"""' in text:
        raise ModelfileError(f'{what} contains """, which a Modelfile cannot quote')
    if "\x00" in text:
        raise ModelfileError(f"{what} contains a NUL character")


def _block(text: str, what: str) -> str:
    """Multi-line text in triple quotes, the form Ollama's documentation uses."""
    _check_text(text, what)
    return f'"""{text}"""'


def _param(value: str, name: str) -> str:
    _check_text(value, f"PARAMETER {name}")
    if "\n" in value or "\r" in value or value != value.strip() or value.startswith('"') or not value:
        return f'"""{value}"""'
    # stop strings are quoted as Ollama shows them; numbers stay bare
    return f'"{value}"' if name == "stop" else value


def _plain(value: str, what: str) -> str:
    _check_text(value, what)
    if "\n" in value or "\r" in value or value != value.strip() or value.startswith('"') or not value:
        raise ModelfileError(f"{what} value {value!r} cannot be written on one Modelfile line")
    return value


# ---- parsing --------------------------------------------------------------------------------


def parse(text: str) -> Modelfile:
    """Parse a Modelfile; errors name the line."""
    text = text.lstrip("\ufeff")
    pos, n = 0, len(text)
    mf: Modelfile | None = None
    pending: list[tuple[str, str, str]] = []  # (instruction, name or role, value)
    while pos < n:
        c = text[pos]
        if c in " \t\r\n":
            pos += 1
            continue
        if c == "#":
            end = _line_end(text, pos)
            pos = end
            continue
        line = text.count("\n", 0, pos) + 1
        word, pos = _word(text, pos, str.isalpha)
        instruction = word.lower()
        if instruction not in INSTRUCTIONS:
            raise ModelfileError(
                f"Modelfile line {line}: unknown instruction '{word or text[pos]}'",
                f"one of {', '.join(i.upper() for i in INSTRUCTIONS)}",
            )
        pos = _need_space(text, pos, line, word)
        sub = ""
        if instruction == "parameter":
            sub, pos = _word(text, pos, lambda ch: ch.isalnum() or ch == "_")
            if not sub:
                raise ModelfileError(f"Modelfile line {line}: PARAMETER without a name")
            pos = _need_space(text, pos, line, sub)
        elif instruction == "message":
            sub, pos = _word(text, pos, str.isalpha)
            if sub not in MESSAGE_ROLES:
                raise ModelfileError(
                    f"Modelfile line {line}: message role must be one of {', '.join(MESSAGE_ROLES)}"
                )
            pos = _need_space(text, pos, line, sub)
        value, pos = _value(text, pos, line)
        pending.append((instruction, sub, value))
    froms = [v for i, _, v in pending if i == "from"]
    if not froms:
        raise ModelfileError("Modelfile has no FROM line")
    mf = Modelfile(from_=froms[-1])
    for instruction, sub, value in pending:
        if instruction == "template":
            mf.template = value
        elif instruction == "system":
            mf.system = value
        elif instruction == "parameter":
            mf.parameters.append((sub, value))
        elif instruction == "license":
            mf.licenses.append(value)
        elif instruction == "adapter":
            mf.adapters.append(value)
        elif instruction == "message":
            mf.messages.append((sub, value))
        elif instruction == "requires":
            mf.requires = value
    return mf


def _word(text: str, pos: int, ok) -> tuple[str, int]:
    start = pos
    while pos < len(text) and ok(text[pos]):
        pos += 1
    return text[start:pos], pos


def _need_space(text: str, pos: int, line: int, after: str) -> int:
    if pos >= len(text) or text[pos] not in " \t":
        raise ModelfileError(f"Modelfile line {line}: expected a space after '{after}'")
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _line_end(text: str, pos: int) -> int:
    ends = [i for i in (text.find("\n", pos), text.find("\r", pos)) if i >= 0]
    return min(ends) if ends else len(text)


def _value(text: str, pos: int, line: int) -> tuple[str, int]:
    """A quoted value ends at the closing quotes that are followed only by blanks up to the end of
    the line; an unquoted value is the rest of the line, trimmed."""
    for quote in ('"""', '"'):
        if text.startswith(quote, pos):
            search = pos + len(quote)
            while True:
                close = text.find(quote, search)
                if close < 0:
                    raise ModelfileError(f"Modelfile line {line}: unterminated {quote} value")
                after = close + len(quote)
                rest_end = _line_end(text, after)
                if text[after:rest_end].strip(" \t") == "":
                    return text[pos + len(quote) : close], rest_end
                search = close + 1
    end = _line_end(text, pos)
    return text[pos:end].strip(" \t"), end
