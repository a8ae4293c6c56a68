"""A runtime's typed options: its `Options` dataclass, filled from the CLI's `-o key=value`.

Every field has a default; a value is converted to the field's type (int, float, bool, str,
an optional of one of these, or a tuple of str, which `-o key=value` given several times
extends). An unknown key or a value of the wrong type is a one-line error naming the valid
keys. `load()` receives the options as keywords (`to_kwargs`), so the measuring child process
gets them as JSON.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from edgekit.errors import EdgekitError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _kind(tp: Any) -> tuple[type, bool, bool]:
    """(base type, optional, repeated) of a field's annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else str
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return str, optional, True
    return (tp if tp in (int, float, bool, str) else str), optional, False


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: take values as strings
        return {f.name: str for f in dataclasses.fields(cls)}


def describe(cls: type) -> list[str]:
    """`key=<type> (default ...)` for every option, for help texts and errors."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        base, optional, repeated = _kind(hints.get(f.name, str))
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        what = base.__name__ + ("..." if repeated else "")
        out.append(f"{f.name}={what} (default {default!r})")
    return out


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _convert(key: str, text: str, base: type, optional: bool) -> object:
    if optional and text.strip().lower() in ("none", ""):
        return None
    if base is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise EdgekitError(f"-o {key}={text}: give true or false")
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise EdgekitError(
                f"-o {key}={text}: not {'an integer' if base is int else 'a number'}"
            ) from None
    return text


def build(
    cls: type,
    pairs: Iterable[str] = (),
    given: Mapping[str, object] | None = None,
    runtime: str = "the runtime",
) -> Any:
    """An instance of the options dataclass `cls` from `pairs` ("key=value") on top of `given`
    (typed values from other flags, e.g. the CLI's vLLM aliases; None values are skipped)."""
    hints = _hints(cls)
    valid = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = {}
    for key, value in (given or {}).items():
        if key in valid and value is not None:
            values[key] = tuple(value) if isinstance(value, list) else value
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise EdgekitError(f"-o {pair}: give key=value")
        if key not in valid:
            listed = ", ".join(valid) or "none"
            raise EdgekitError(f"unknown option '{key}' for runtime {runtime}; valid options: {listed}")
        base, optional, repeated = _kind(hints.get(key, str))
        if repeated:
            prev = values.get(key, ())
            values[key] = (*prev, text)  # type: ignore[misc]
        else:
            values[key] = _convert(key, text, base, optional)
    return cls(**values)


def to_kwargs(options: object) -> dict[str, Any]:
    """The options as load() keywords (JSON-able: tuples become lists)."""
    if options is None:
        return {}
    out = {}
    for f in dataclasses.fields(options):  # type: ignore[arg-type]
        v = getattr(options, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def from_kwargs(cls: type, kwargs: Mapping[str, object]) -> Any:
    """The options instance back from load() keywords (unknown keys ignored)."""
    valid = set(names(cls))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items() if k in valid})
