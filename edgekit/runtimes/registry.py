"""The runtime registry: every runtime registered in the `edgekit.runtimes` entry-point group.

Built-ins register there too (pyproject.toml); the table below only fills in a built-in when
the installed metadata lacks it (a source tree used without `pip install -e`). A runtime
whose module fails to import, lacks part of the contract (edgekit.runtimes.base) or whose
`available()` raises is reported unavailable with a one-line reason, never a crash.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError, UnknownName
from edgekit.runtimes.base import DEVICE_KINDS, REQUIRED_ATTRIBUTES, Capabilities

GROUP = "edgekit.runtimes"

# built-in runtimes: entry-point name -> module, and the extra that installs each
BUILTINS = {
    "llama.cpp": "edgekit.runtimes.llamacpp",
    "transformers": "edgekit.runtimes.transformers",
    "onnxruntime": "edgekit.runtimes.onnxruntime",
    "vllm": "edgekit.runtimes.vllm",
}
_BUILTIN_EXTRAS = {"llama.cpp": "gguf", "transformers": "torch", "onnxruntime": "onnx", "vllm": "vllm"}


class RuntimeUnavailable(EdgekitError):
    """A registered runtime that cannot run here; names what installs it."""

    def __init__(self, info: RuntimeInfo):
        super().__init__(f"runtime {info.name} is unavailable: {info.reason}", info.install_hint or None)
        self.info = info


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    target: str  # the entry point's value ("package.module")
    origin: str  # entry-point | builtin
    available: bool
    reason: str  # version when available, why not otherwise
    formats: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    extra: str | None = None
    install_hint: str = ""
    description: str = ""
    packages: tuple[str, ...] = ()
    module: object = field(default=None, repr=False, compare=False)
    caps: Capabilities = field(default_factory=Capabilities, repr=False, compare=False)

    @property
    def server(self) -> bool:
        return self.caps.server

    @property
    def options(self) -> type:
        """The runtime's options dataclass (edgekit.runtimes.options builds it from -o key=value)."""
        return self.caps.options

    @property
    def version(self) -> str | None:
        return self.reason if self.available else None

    def serves(self, fmt: str) -> bool:
        return serves(self.formats, fmt, self.name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "available": self.available,
            "version": self.version,
            "reason": None if self.available else self.reason,
            "formats": list(self.formats),
            "devices": list(self.devices),
            "extra": self.extra,
            "install": None if self.available else (self.install_hint or None),
            "description": self.description or None,
            "entry_point": self.target,
            "origin": self.origin,
            "server": self.caps.server,
            "kv_cache_types": list(self.caps.kv_cache_types),
            "options": _option_names(self.caps.options),
        }


def _option_names(cls: type) -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(cls)]


def serves(formats: tuple[str, ...], fmt: str, name: str | None = None) -> bool:
    """Whether a runtime declaring `formats` serves format id `fmt` ("gguf:Q4_K_M", "bf16"); a
    format may also name the runtimes that load it (a family added after the runtime was)."""
    key = fmt.strip().lower()
    family = key.split(":", 1)[0]
    declared = {f.strip().lower() for f in formats}
    if key in declared or family in declared:
        return True
    if name is None:
        return False
    from edgekit.formats import get_format

    try:
        return _norm(name) in {_norm(r) for r in get_format(fmt).runtimes}
    except EdgekitError:
        return False


def _entry_points() -> list[tuple[str, str, str]]:
    """(name, value, origin) of every registered runtime, built-ins filled in."""
    from importlib.metadata import entry_points

    out: dict[str, tuple[str, str, str]] = {}
    eps: Any
    try:
        eps = entry_points(group=GROUP)
    except Exception:  # broken metadata of some other distribution must not break edgekit
        eps = []
    for ep in eps:
        out.setdefault(ep.name, (ep.name, ep.value, "entry-point"))
    for n, target in BUILTINS.items():
        out.setdefault(n, (n, target, "builtin"))
    return list(out.values())


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _extras_offered() -> set[str]:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return set(metadata("edgekit").get_all("Provides-Extra") or [])
    except PackageNotFoundError:
        return set()


def _install_hint(ep_name: str, mod, extra: str | None) -> str:
    hint = getattr(mod, "install", None) if mod is not None else None
    if isinstance(hint, str) and hint:
        return hint
    if extra and (extra in _extras_offered() or ep_name not in _BUILTIN_EXTRAS):
        return f'install it with: pip install "edgekit[{extra}]"'
    return "no extra installs it in this edgekit version"


def _load_target(target: str):
    mod_name, _, attr = target.partition(":")
    obj = importlib.import_module(mod_name.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def inspect(ep_name: str, target: str, origin: str = "entry-point", check: bool = True) -> RuntimeInfo:
    """Load one registered runtime and check it against the contract; never raises.

    check=False skips `available()` (for listing names without importing engines)."""
    extra = _BUILTIN_EXTRAS.get(ep_name)
    try:
        mod = _load_target(target)
    except ModuleNotFoundError as e:
        if e.name and target.split(":")[0].startswith(e.name):  # the module itself is missing
            why = f"not installed / not implemented ({_one_line(e)})"
            hint = "" if ep_name in BUILTINS else "reinstall the package that registers it"
        else:
            why = f"cannot import a dependency ({_one_line(e)})"
            hint = _install_hint(ep_name, None, extra)
        return RuntimeInfo(ep_name, target, origin, False, why, extra=extra, install_hint=hint)
    except Exception as e:  # a third party's module may fail in any way
        return RuntimeInfo(
            ep_name,
            target,
            origin,
            False,
            f"fails to import ({_one_line(e)})",
            extra=extra,
            install_hint=_install_hint(ep_name, None, extra),
        )
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(mod, a)]
    name = getattr(mod, "name", ep_name) if isinstance(getattr(mod, "name", None), str) else ep_name
    extra = getattr(mod, "extra", extra)
    formats = _tuple(getattr(mod, "formats", ()))
    devices = _tuple(getattr(mod, "devices", ()))
    common = dict(
        formats=formats,
        devices=devices,
        extra=extra if isinstance(extra, str) else None,
        install_hint=_install_hint(ep_name, mod, extra if isinstance(extra, str) else None),
        description=str(getattr(mod, "description", "") or ""),
        packages=_tuple(getattr(mod, "packages", ())),
        module=mod,
    )
    if missing:
        why = f"does not implement the runtime contract (missing: {', '.join(missing)})"
        return RuntimeInfo(name, target, origin, False, why, **common)
    try:
        caps = Capabilities.of(mod)
    except EdgekitError as e:
        return RuntimeInfo(name, target, origin, False, f"malformed capabilities: {e.one_line()}", **common)
    common["caps"] = caps
    bad_dev = [d for d in devices if d not in DEVICE_KINDS]
    if not formats or not devices or bad_dev:
        why = (
            "declares no formats"
            if not formats
            else (
                "declares no devices"
                if not devices
                else f"unknown device kind {bad_dev[0]!r} (use {', '.join(DEVICE_KINDS)})"
            )
        )
        return RuntimeInfo(name, target, origin, False, why, **common)
    if not check:
        return RuntimeInfo(name, target, origin, True, "not checked", **common)
    try:
        ok, why = mod.available()
        ok, why = bool(ok), " ".join(str(why).split())
    except Exception as e:
        ok, why = False, f"available() failed ({_one_line(e)})"
    return RuntimeInfo(name, target, origin, ok, why or ("available" if ok else "unavailable"), **common)


def _tuple(v) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    try:
        return tuple(str(x) for x in v)
    except TypeError:
        return ()


def discover(check: bool = True) -> list[RuntimeInfo]:
    """Every registered runtime, in registration order (built-ins first when installed so)."""
    return [inspect(n, t, o, check=check) for n, t, o in _entry_points()]


def names() -> list[str]:
    return [n for n, _, _ in _entry_points()]


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def find(name: str, check: bool = True) -> RuntimeInfo:
    """The registered runtime called `name` ("llama.cpp", "llamacpp", "transformers"), checked
    (`check=False`: without calling its `available()`, for its capabilities only).

    Raises UnknownName (with suggestions) for a name nobody registered."""
    eps = _entry_points()
    key = _norm(name)
    for n, target, origin in eps:
        if _norm(n) == key:
            return inspect(n, target, origin, check=check)
    for n, target, origin in eps:  # a module whose `name` differs from its entry point's
        info = inspect(n, target, origin, check=False)
        if info.module is not None and _norm(info.name) == key:
            return inspect(n, target, origin, check=check) if check else info
    raise UnknownName("runtime", name, [n for n, _, _ in eps])


def capabilities(name: str) -> Capabilities:
    """What the runtime called `name` declares (imports its module, never its engine); the
    defaults for a runtime that cannot be imported here (the planner still answers)."""
    try:
        return find(name, check=False).caps
    except UnknownName:
        return Capabilities()


def get(name: str) -> RuntimeInfo:
    """Like `find`, but raises RuntimeUnavailable (naming the extra) when it cannot run here."""
    info = find(name)
    if not info.available:
        raise RuntimeUnavailable(info)
    return info


def for_format(fmt: str, preferred: str | None = None, server: bool | None = None) -> RuntimeInfo:
    """The runtime that serves `fmt`: `preferred` (the planner's choice for the device) when it
    is registered, usable and serves it, else the first usable registered runtime that does
    (`server`: only server runtimes, or only the others)."""
    infos = [inspect(n, t, o, check=False) for n, t, o in _entry_points()]
    if server is not None:
        infos = [i for i in infos if i.module is None or i.caps.server == server]
    if preferred:
        infos.sort(key=lambda i: _norm(i.name) != _norm(preferred))
    first_failure = None
    for i in infos:
        if i.module is None:  # failed to import: it can serve nothing here
            if preferred and _norm(i.name) == _norm(preferred):
                first_failure = first_failure or i
            continue
        if not i.serves(fmt):
            continue
        full = inspect(next(n for n, t, _ in _entry_points() if t == i.target), i.target, i.origin)
        if full.available:
            return full
        first_failure = first_failure or full
    if first_failure is not None:
        raise RuntimeUnavailable(first_failure)
    raise EdgekitError(f"no registered runtime serves {fmt}", "see `edgekit runtimes`")
