"""The areas of edgekit's cache (`edgekit.paths.cache_dir()`): what each one holds, its
entries and their bytes, least-recently-used pruning and clearing (`edgekit cache`).

An area is a real directory directly under the cache directory. Its entries are its direct
children, each with its seal (`<entry>.sha256`, edgekit.atomic.seal) counted as part of it.
Nothing here follows a symbolic link or leaves the area: a link is an entry of its own,
removed as a link, and an odd name (spaces, newlines, leading dashes, bytes that are not
UTF-8) is only ever handed to the file system as a path.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir

# area -> (what it holds, whether pruning and clearing may remove its entries by default).
# Areas not named here (a newer edgekit's) are shown and removed only when asked by name.
KNOWN: dict[str, tuple[str, bool]] = {
    "tensors": ("quantized tensors reused by GGUF builds", True),
    "imatrix": ("importance matrices", True),
    "reference": ("reference GGUFs (the unquantized model for scoring)", True),
    "quality": ("reference quality stores (top-K log-probabilities)", True),
    "imports": ("GGUF checkpoints imported to safetensors", True),
    "onnx": ("ONNX exports", True),
    "cpu": ("CPU bandwidth probes", True),
    "vllm-logs": ("vLLM server logs", True),
    "bench": ("measured results (`edgekit bench`): not rebuilt without the device", False),
}
# lock files of running edgekit processes: removing one under a waiting process would let
# two processes build the same entry, so they are never removed (they are empty files)
LOCKS = "locks"
# a hidden file this young may be a running writer's temporary file: pruning leaves it
STAGING_GRACE_S = 3600.0
_SEAL = ".sha256"


@dataclass
class Entry:
    path: Path  # the entry (a file, a directory or a link); its seal is path + ".sha256"
    bytes: int
    last_used: float  # the newest access or modification time of the entry and its seal
    staging: bool  # a hidden name: a writer's temporary file, or one a killed process left


@dataclass
class AreaSummary:
    area: str
    description: str
    entries: int
    bytes: int
    default: bool  # pruned and cleared without being named

    def to_dict(self) -> dict:
        return {
            "area": self.area,
            "description": self.description,
            "entries": self.entries,
            "bytes": self.bytes,
            "default": self.default,
        }


@dataclass
class Removed:
    area: str
    removed: int
    freed_bytes: int
    entries: int  # what the area holds afterwards
    bytes: int

    def to_dict(self) -> dict:
        return {
            "area": self.area,
            "removed": self.removed,
            "freed_bytes": self.freed_bytes,
            "entries": self.entries,
            "bytes": self.bytes,
        }


def root() -> Path:
    return cache_dir()


def area_path(area: str) -> Path:
    return root() / area


def area_names() -> list[str]:
    """Every area there is (real directories under the cache directory), the known ones first."""
    base = root()
    found = []
    try:
        with os.scandir(base) as it:
            for d in it:
                if d.is_dir(follow_symlinks=False) and not d.name.startswith("."):
                    found.append(d.name)
    except FileNotFoundError:
        pass
    known = [a for a in KNOWN if a in found]
    return (
        known
        + sorted(a for a in found if a not in KNOWN and a != LOCKS)
        + ([LOCKS] if LOCKS in found else [])
    )


def check_area(area: str) -> str:
    """`area` when it names an area edgekit may touch; an EdgekitError otherwise."""
    if area == LOCKS:
        raise EdgekitError(
            "the locks area is never pruned or cleared", "running edgekit processes hold its files"
        )
    if area in KNOWN:
        return area
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", area) and area in area_names():
        return area
    raise EdgekitError(f"unknown cache area '{area}'", f"areas: {', '.join(_choices())}")


def _choices() -> list[str]:
    return [a for a in dict.fromkeys([*KNOWN, *area_names()]) if a != LOCKS]


def default_areas() -> list[str]:
    return [a for a, (_, default) in KNOWN.items() if default]


def describe(area: str) -> str:
    if area == LOCKS:
        return "lock files of running edgekit processes (never removed)"
    return KNOWN.get(area, ("not an area this edgekit writes", False))[0]


def entries(area: str) -> list[Entry]:
    """The area's entries; an area that is a link or not there has none."""
    d = area_path(area)
    if d.is_symlink() or not d.is_dir():
        return []
    out: list[Entry] = []
    try:
        with os.scandir(d) as it:
            names = [e.name for e in it]
    except OSError:
        return []
    present = set(names)
    for name in names:
        if name.endswith(_SEAL) and name[: -len(_SEAL)] in present:
            continue  # counted with its entry
        p = d / name
        try:
            size, used = _measure(p)
        except FileNotFoundError:
            continue  # removed under us by another process
        seal = d / (name + _SEAL)
        if name + _SEAL in present:
            try:
                st = seal.lstat()
                size += st.st_size
                used = max(used, st.st_atime, st.st_mtime)
            except FileNotFoundError:
                pass
        out.append(Entry(p, size, used, name.startswith(".")))
    return out


def _measure(p: Path) -> tuple[int, float]:
    """(bytes, last use) of a file, link or directory; a directory is walked, links not followed."""
    st = p.lstat()
    used = max(st.st_atime, st.st_mtime)
    if not p.is_dir() or p.is_symlink():
        return st.st_size, used
    total = 0
    for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                continue
    return total, used


def summary(area: str) -> AreaSummary:
    es = entries(area)
    default = KNOWN.get(area, ("", False))[1]
    return AreaSummary(area, describe(area), len(es), sum(e.bytes for e in es), default)


def show() -> list[AreaSummary]:
    return [summary(a) for a in area_names()]


def remove(entry: Entry) -> int:
    """Remove an entry and its seal (a link as a link); the bytes freed (0 when already gone)."""
    p = entry.path
    freed = 0
    seal = p.with_name(p.name + _SEAL)
    for q in (seal, p):
        try:
            if q.is_dir() and not q.is_symlink():
                shutil.rmtree(q)
            else:
                q.unlink()
        except FileNotFoundError:
            continue
        freed = entry.bytes
    return freed


def prune(areas: list[str], max_bytes: int) -> list[Removed]:
    """Remove least-recently-used entries of `areas` until together they hold at most
    `max_bytes`. Old staging files (hidden names a killed process left) go first; younger
    ones, which a running writer may still be filling, stay."""
    now = time.time()
    pool: list[tuple[str, Entry]] = []
    removed = {a: [0, 0] for a in areas}
    for a in areas:
        for e in entries(a):
            if e.staging and now - e.last_used < STAGING_GRACE_S:
                continue
            pool.append((a, e))
    total = sum(e.bytes for _, e in pool)
    # leftovers first, then the least recently used
    pool.sort(key=lambda ae: (not ae[1].staging, ae[1].last_used))
    for a, e in pool:
        if total <= max_bytes and not e.staging:
            break
        freed = remove(e)
        total -= e.bytes
        removed[a][0] += 1
        removed[a][1] += freed
    return _after(areas, removed)


def clear(areas: list[str]) -> list[Removed]:
    """Remove every entry of `areas`; the areas themselves stay (empty)."""
    removed = {a: [0, 0] for a in areas}
    for a in areas:
        for e in entries(a):
            removed[a][0] += 1
            removed[a][1] += remove(e)
    return _after(areas, removed)


def _after(areas: list[str], removed: dict[str, list[int]]) -> list[Removed]:
    out = []
    for a in areas:
        s = summary(a)
        out.append(Removed(a, removed[a][0], removed[a][1], s.entries, s.bytes))
    return out


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in `text`: 123, 512K, 20G, 1.5GiB (K/M/G/T and KiB/MiB/GiB/TiB are powers of
    1024), 500MB, 2GB (KB/MB/GB/TB are powers of 1000)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text, flags=re.IGNORECASE)
    if not m:
        raise EdgekitError(f"{what} '{text}': expected a size such as 512M, 20G or 1.5GiB")
    number, unit, tail = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    if tail and not unit and tail != "b":
        raise EdgekitError(f"{what} '{text}': expected a size such as 512M, 20G or 1.5GiB")
    scale = 1000 ** ("kmgt".index(unit) + 1) if unit and tail == "b" else _UNITS[unit]
    return int(number * scale)
