"""Artifacts: a model file (or directory) plus a manifest that says exactly how it was made."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgekit import __version__, atomic
from edgekit.atomic import sha256_file
from edgekit.errors import EdgekitError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str) -> str:
    """A file-name-safe form of a model name (no separators, no leading dots)."""
    s = _SAFE.sub("-", name).strip(".-")
    if not s:
        raise EdgekitError(f"cannot make a file name from {name!r}")
    return s[:120]


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".manifest.json")


def artifact_size(path: Path) -> int:
    """Bytes of a file artifact, or of the files of a directory artifact (safetensors checkpoints)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def artifact_sha256(path: Path) -> str:
    """sha256 of a file; for a directory, sha256 over its sorted `name sha256` lines."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file():
            h.update(f"{p.name} {sha256_file(p)}\n".encode())
    return h.hexdigest()


def tool_versions(*packages: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"edgekit": __version__}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


# manifest keys a Manifest holds as fields; everything else a producer records (GGUF's tensor
# table, its convert time) is kept in `details` and written at the top level as before
_FIELDS = (
    "created",
    "format",
    "file",
    "layout",
    "size_bytes",
    "sha256",
    "bits_per_weight",
    "files",
    "source",
    "recipe",
    "tool_versions",
)


@dataclass
class Manifest:
    """What an artifact is and exactly how it was made; written beside it as
    `<artifact>.manifest.json` by `write_manifest`, the one writer."""

    format: str  # a format id (edgekit.formats)
    file: str  # the artifact's file or directory name
    layout: str  # how it is stored: gguf | compressed-tensors | onnx | safetensors | ...
    size_bytes: int
    sha256: str  # of the file; of the sorted `name sha256` lines for a directory
    source: dict[str, Any]  # the checkpoint it was made of: name, hub_id, path, revision, license
    recipe: dict[str, Any]  # the resolved recipe: producer, its settings, calibration
    bits_per_weight: float | None = None
    files: dict[str, int] | None = None  # a directory artifact's files and their sizes
    tool_versions: dict[str, str | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # family-specific extras
    created: str = ""

    @property
    def revision(self) -> str | None:
        return self.source.get("revision")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _FIELDS}
        if out["files"] is None:
            del out["files"]
        return {**out, **self.details}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Read a manifest written by any edgekit version; raises ValueError when malformed."""
        if not isinstance(d, dict):
            raise ValueError("a manifest is a JSON object")
        try:
            fmt, size = d["format"], d["size_bytes"]
        except KeyError as e:
            raise ValueError(f"missing {e.args[0]!r}") from None
        if not isinstance(fmt, str) or isinstance(size, bool) or not isinstance(size, int):
            raise ValueError("format must be a string and size_bytes an integer")
        details = {k: v for k, v in d.items() if k not in _FIELDS}
        tools = d.get("tool_versions") or details.pop("tools", None) or {}  # "tools": ONNX, before 0.2
        source, recipe = d.get("source") or {}, d.get("recipe") or {}
        if not isinstance(source, dict) or not isinstance(recipe, dict):
            raise ValueError("source and recipe must be objects")
        bpw = d.get("bits_per_weight")
        return cls(
            format=fmt,
            file=str(d.get("file") or ""),
            layout=str(d.get("layout") or ""),
            size_bytes=size,
            sha256=str(d.get("sha256") or ""),
            source=source,
            recipe=recipe,
            bits_per_weight=float(bpw) if isinstance(bpw, int | float) else None,
            files=d.get("files"),
            tool_versions=dict(tools),
            details=details,
            created=str(d.get("created") or ""),
        )


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def size_bytes(self) -> int:
        return self.manifest.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "manifest_path": str(manifest_path(self.path)),
            **self.manifest.to_dict(),
        }


def describe_source(checkpoint: Any) -> dict[str, Any]:
    """The `source` of a manifest for an opened Checkpoint."""
    return {
        **checkpoint.to_dict(),
        "hub_id": checkpoint.entry.hub_id,
        "license": checkpoint.entry.license.to_dict(),
    }


def write_manifest(artifact: Path, manifest: Manifest) -> Artifact:
    """Write `manifest` beside `artifact` (atomically) once the artifact itself is in place."""
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic.write_json(manifest_path(artifact), manifest.to_dict())
    return Artifact(artifact, manifest)


def staging_path(dest: Path) -> Path:
    """Where a producer builds the artifact for `dest` before `publish` moves it into place:
    a hidden name in the same directory (same file system, so the move is one rename)."""
    return dest.with_name(f".{dest.name}.building")


def publish(staging: Path, dest: Path, manifest: Manifest) -> Artifact:
    """Put a finished artifact and its manifest at `dest` so that a reader never sees the
    artifact without its manifest: the manifest is written first (atomically), the artifact
    renamed into place last. An interruption in between leaves a manifest whose artifact is
    missing (or is the older one, whose sha256 differs): readers (`current_artifact`) treat
    that as no artifact, and the next build replaces both."""
    manifest.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic.write_json(manifest_path(dest), manifest.to_dict())
    if staging.is_dir():
        atomic.replace_dir(staging, dest)
    else:
        os.replace(staging, dest)
        atomic._fsync_dir(dest.parent)
    return Artifact(dest, manifest)


@contextlib.contextmanager
def build_lock(dest: Path) -> Iterator[None]:
    """Hold the lock on `dest` while it is checked, built and published: a second edgekit
    process building the same artifact waits here, then finds it current and reuses it
    (`atomic.locked`: a killed build never blocks the next one). Leftover staging files of
    killed builds are removed once the lock is held."""
    with atomic.locked(dest):
        # ours: `.NAME.building`, `.NAME.*.part` and the converter's `..NAME.building.*.part`
        mine = (f".{dest.name}.", f"..{dest.name}.")
        for stale in dest.parent.iterdir():
            if stale.name.startswith(mine) and stale.name.endswith((".building", ".part")):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
        yield


def read_manifest(path: Path) -> Manifest | None:
    """The manifest beside `path`, or None when there is none or it does not parse."""
    mp = manifest_path(path)
    if not mp.is_file():
        return None
    try:
        return Manifest.from_dict(json.loads(mp.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def load_artifact(path: Path, verify: bool = False) -> Artifact | None:
    """The artifact at `path` if it exists with a manifest whose size still matches (and, with
    `verify`, whose sha256 matches the bytes: a damaged or half-replaced artifact is absent)."""
    if not (path.is_file() or path.is_dir()):
        return None
    m = read_manifest(path)
    if m is None or m.size_bytes != artifact_size(path):
        return None
    if verify and m.sha256 != artifact_sha256(path):
        return None
    return Artifact(path, m)


def current_artifact(path: Path, fmt: str, revision: str | None, recipe: dict[str, Any]) -> Artifact | None:
    """The artifact at `path` when it is current: intact (size as recorded), of `fmt`, made of
    the same source revision, and with every recipe setting in `recipe` as recorded. Producers
    call this before building and rebuild otherwise. The sha256 is checked: a damaged artifact
    is rebuilt, never reused."""
    art = load_artifact(path, verify=True)
    if art is None or art.format != fmt or art.manifest.revision != revision:
        return None
    if any(art.manifest.recipe.get(k) != v for k, v in recipe.items()):
        return None
    return art
