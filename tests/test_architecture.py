"""The import rules of ARCHITECTURE.md, checked on the source itself.

Every module of edgekit/ is parsed with `ast` (nothing is imported), so a wrong-way import
fails here even when no test happens to execute it. An edge A -> B is any import of edgekit
module B written anywhere in A: at module level, inside a function, under `if TYPE_CHECKING:`.
Function-level imports are for heavy third-party libraries only; they do not hide an edge.
"""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edgekit"

# Third-party libraries that cost seconds to import (or pull numpy in: `gguf` does). The
# light rooms may import them only inside the functions that need them.
HEAVY = {
    "torch",
    "transformers",
    "llama_cpp",
    "numpy",
    "gguf",
    "llmcompressor",
    "compressed_tensors",
    "accelerate",
    "vllm",
    "optimum",
    "safetensors.torch",
    "safetensors.numpy",
}
HEAVY_PREFIXES = ("onnx",)  # onnx, onnxruntime, onnxscript

# Rooms that must stay light at import time (`edgekit plan` answers in well under a second).
LIGHT = (
    "edgekit.plan",
    "edgekit.layout",
    "edgekit.models",
    "edgekit.profiles",
    "edgekit.formats",
    "edgekit.gguf_io",
)

# The only places allowed to compare a format family / an architecture family by name.
FAMILY_MODULES = ("edgekit.formats", "edgekit.models.arch")
# Format families the registry knows; a format id is "<family>:<variant>" (or just "bf16").
FORMAT_FAMILIES = {"gguf", "gptq", "awq", "fp8", "bf16", "onnx"}


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    module_level: bool  # executed when `src` is imported (not inside a function body)
    type_checking: bool  # under `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{_rel(self.src)}:{self.line}"


@dataclass(frozen=True)
class ThirdParty:
    src: str
    name: str
    line: int
    module_level: bool
    type_checking: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_package(mod: str) -> bool:
    return _modules()[mod].name == "__init__.py"


@functools.cache
def _rel(mod: str) -> str:
    return str(_modules()[mod].relative_to(ROOT))


@functools.cache
def _tree(mod: str) -> ast.Module:
    path = _modules()[mod]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _in(mod: str, room: str) -> bool:
    return mod == room or mod.startswith(room + ".")


def _resolve_known(name: str) -> str | None:
    """The edgekit module that executes for `import name` (longest known prefix)."""
    mods = _modules()
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import node with (module_level, type_checking)."""

    def visit(node: ast.AST, module_level: bool, type_checking: bool) -> Iterator:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, module_level, type_checking
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, False, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), module_level, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), module_level, type_checking)
            else:
                yield from visit(child, module_level, type_checking)

    yield from visit(tree, True, False)


def _absolute(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def _imports(mod: str) -> tuple[tuple[Edge, ...], tuple[ThirdParty, ...]]:
    edges: list[Edge] = []
    third: list[ThirdParty] = []
    mods = _modules()
    for node, top, tc in _walk_imports(_tree(mod)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in(alias.name, "edgekit"):
                    dst = _resolve_known(alias.name)
                    if dst:
                        edges.append(Edge(mod, dst, node.lineno, top, tc))
                else:
                    third.append(ThirdParty(mod, alias.name, node.lineno, top, tc))
            continue
        target = _absolute(mod, node)
        if not _in(target, "edgekit"):
            for alias in node.names:
                full = f"{target}.{alias.name}"
                third.append(ThirdParty(mod, full, node.lineno, top, tc))
            continue
        names_a_value = False
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in mods:  # `from edgekit.x import y` with y a submodule: an edge to edgekit.x.y
                edges.append(Edge(mod, sub, node.lineno, top, tc))
            else:
                names_a_value = True
        if names_a_value:
            dst = _resolve_known(target)
            if dst:
                edges.append(Edge(mod, dst, node.lineno, top, tc))
    return tuple(e for e in edges if e.dst != mod), tuple(third)


def _graph() -> dict[str, list[Edge]]:
    return {m: list(_imports(m)[0]) for m in _modules()}


def _cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for e in graph[v]:
            w = e.dst
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def _describe_cycle(comp: list[str], graph: dict[str, list[Edge]]) -> str:
    members = set(comp)
    lines = [" <-> ".join(comp)]
    for m in comp:
        for e in graph[m]:
            if e.dst in members:
                kind = "module level" if e.module_level else "in a function"
                lines.append(f"    {e.where()}: {e.src} imports {e.dst} ({kind})")
    return "\n".join(lines)


def test_modules_are_found():
    mods = _modules()
    assert "edgekit.plan" in mods and "edgekit.cli.main" in mods and len(mods) > 40


def test_no_import_cycles():
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, (
        "import cycles among edgekit modules (a function-level import of an edgekit module counts "
        "too; move the shared piece down a room instead):\n"
        + "\n".join(_describe_cycle(c, graph) for c in cycles)
    )


def _forbidden(rooms: tuple[str, ...], banned: tuple[str, ...], allow_inside: bool = False) -> list[str]:
    bad = []
    for mod in _modules():
        if not any(_in(mod, r) for r in rooms):
            continue
        for e in _imports(mod)[0]:
            if any(_in(e.dst, b) for b in banned) and not (allow_inside and any(_in(mod, b) for b in banned)):
                bad.append(f"{e.where()}: {e.src} imports {e.dst}")
    return bad


def test_runtimes_never_import_bench_or_jobs():
    bad = _forbidden(("edgekit.runtimes",), ("edgekit.bench", "edgekit.jobs"))
    assert not bad, (
        "runtimes/ must not import bench/ or jobs/ (they use runtimes, not the reverse):\n" + "\n".join(bad)
    )


def test_models_and_profiles_never_import_quantize_or_runtimes():
    bad = _forbidden(("edgekit.models", "edgekit.profiles"), ("edgekit.quantize", "edgekit.runtimes"))
    assert not bad, "models/ and profiles/ are facts about checkpoints and devices; they must not import " + (
        "quantize/ or runtimes/:\n" + "\n".join(bad)
    )


def test_nothing_imports_cli():
    bad = [
        f"{e.where()}: {e.src} imports {e.dst}"
        for mod in _modules()
        if not _in(mod, "edgekit.cli") and mod != "edgekit.__main__"
        for e in _imports(mod)[0]
        if _in(e.dst, "edgekit.cli")
    ]
    assert not bad, "the CLI is the top room: nothing outside edgekit/cli/ may import it:\n" + "\n".join(bad)


def _heavy(name: str) -> bool:
    return (
        name.split(".")[0] in HEAVY
        or any(name == h or name.startswith(h + ".") for h in HEAVY)
        or name.startswith(HEAVY_PREFIXES)
    )


def _parents(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_light_rooms_import_nothing_heavy_at_module_level():
    """Followed through edgekit's own module-level imports (and the packages they execute)."""
    bad = []
    for start in sorted(m for m in _modules() if any(_in(m, r) for r in LIGHT)):
        seen = {start: [start]}
        todo = [start]
        while todo:
            mod = todo.pop()
            chain = seen[mod]
            _, third = _imports(mod)
            for t in third:
                if t.module_level and not t.type_checking and _heavy(t.name):
                    via = " -> ".join(chain)
                    bad.append(f"{_rel(mod)}:{t.line}: imports {t.name} at module level (reached from {via})")
            nxt = [e.dst for e in _imports(mod)[0] if e.module_level and not e.type_checking]
            for dst in nxt + [p for d in nxt for p in _parents(d)]:
                if dst not in seen:
                    seen[dst] = [*chain, dst]
                    todo.append(dst)
    bad = sorted(set(bad))
    assert not bad, (
        "plan.py, layout.py, models/, profiles/, formats/ and gguf_io/ must import heavy libraries only "
        "inside the functions that need them:\n" + "\n".join(bad)
    )


# ---- no family compared by its name outside the family modules ------------------------------


def _str_consts(node: ast.expr) -> list[str] | None:
    """The strings of a str constant or a tuple/list/set/frozenset(...) of str constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts:
        vals = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        return vals if len(vals) == len(node.elts) else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("set", "frozenset", "tuple")
        and len(node.args) == 1
    ):
        return _str_consts(node.args[0])
    return None


def _is_family(node: ast.expr) -> bool:
    """`x.family`, `x.arch_family`, or a plain variable named `family` / `*_family`."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name == "family" or name.endswith("_family")


_FORMAT_ID_NAMES = {"fmt", "fmt_id", "format_id"}
_FORMAT_ID_ATTRS = {"id", "format", "fmt", "fmt_id", "format_id"}


def _is_format_id(node: ast.expr) -> bool:
    """`fmt.id`, `artifact.format`, a variable `fmt` / `fmt_id`: a whole format id."""
    if isinstance(node, ast.Attribute):
        return node.attr in _FORMAT_ID_ATTRS
    return isinstance(node, ast.Name) and node.id in _FORMAT_ID_NAMES


def _is_id_prefix(node: ast.expr) -> bool:
    """`spec.split(":")[0]`, `spec.partition(":")[0]` and friends: the family part of an id."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call)):
        return False
    idx = node.slice
    if not (isinstance(idx, ast.Constant) and idx.value == 0):
        return False
    call = node.value
    return (
        isinstance(call.func, ast.Attribute)
        and call.func.attr in ("split", "rsplit", "partition", "rpartition")
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value == ":"
    )


def _names_format_family(s: str) -> bool:
    return s.split(":")[0].strip().lower() in FORMAT_FAMILIES


def _family_comparisons(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
                if not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                    continue
                for a, b in ((left, right), (right, left)):
                    consts = _str_consts(b)
                    if consts is None:
                        continue
                    if _is_family(a):
                        yield node.lineno, f"{ast.unparse(node)}"
                    elif (_is_id_prefix(a) or _is_format_id(a)) and any(
                        _names_format_family(s) for s in consts
                    ):
                        yield node.lineno, f"{ast.unparse(node)}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "removeprefix")
            and node.args
        ):
            consts = _str_consts(node.args[0])
            if consts and any(_names_format_family(s) for s in consts):
                yield node.lineno, f"{ast.unparse(node)}"
        elif isinstance(node, ast.Match) and (_is_family(node.subject) or _is_id_prefix(node.subject)):
            for case in node.cases:
                if isinstance(case.pattern, ast.MatchValue) and _str_consts(case.pattern.value):
                    yield (
                        case.pattern.lineno,
                        f"match {ast.unparse(node.subject)}: case {ast.unparse(case.pattern)}",
                    )


def test_no_family_compared_by_name_outside_family_modules():
    bad = []
    for mod in _modules():
        if any(_in(mod, room) for room in FAMILY_MODULES):
            continue
        for line, text in sorted(set(_family_comparisons(_tree(mod)))):
            bad.append(f"{_rel(mod)}:{line}: {text}")
    assert not bad, (
        f"{len(bad)} comparison(s) of a format family, a format id or an architecture family by name outside "
        "edgekit/formats/ and edgekit/models/arch/ (ask the family object instead):\n" + "\n".join(bad)
    )


def test_family_scan_catches_the_known_shapes():
    src = """
fmt.family == "gguf"
"awq" != f.family
a.family in ("phi3", "qwen3")
x.family not in {"gptq", "awq"}
spec.startswith("gguf:")
spec.startswith(("gptq:", "awq:"))
spec.split(":")[0] == "onnx"
fmt.id == "fp8:block128"
art.format in ("bf16", "onnx:fp32")
family in ["fp8"]
match fmt.family:
    case "bf16":
        pass
"""
    ok = """
kind == "gpu"
name.startswith("model.")
info.name == "vllm"
spec.split(":")[0] == "cpu"
fmt.family == other.family
fmt.id == "custom"
"""
    assert len(list(_family_comparisons(ast.parse(src)))) == 11
    assert list(_family_comparisons(ast.parse(ok))) == []


def test_import_scan_resolves_submodule_imports():
    # `from edgekit.cli import bench, models, ...` is an edge to each submodule
    assert {"edgekit.cli.bench", "edgekit.cli.models"} <= {e.dst for e in _imports("edgekit.cli.main")[0]}
    # `from edgekit import atomic` is an edge to edgekit.atomic, not to the package
    assert "edgekit.atomic" in {e.dst for e in _imports("edgekit.profiles.cpu")[0]}


# ---- self-contained ---------------------------------------------------------------------------


def test_no_file_refers_outside_the_repository():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    # the paths, and the notes that lived there (their facts are in docs/references.md and
    # docs/dependencies.md now)
    needles = [b"../" + b"shared", b"/work/" + b"shared", b"ANCHORS" + b".md", b"DEPENDENCIES" + b".md"]
    bad = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        for needle in needles:
            if needle in data:
                for no, line in enumerate(data.splitlines(), 1):
                    if needle in line:
                        bad.append(f"{name.decode()}:{no}: {line.decode(errors='replace').strip()[:120]}")
    assert not bad, "files cite places outside the repository (the facts belong in docs/):\n" + "\n".join(bad)
