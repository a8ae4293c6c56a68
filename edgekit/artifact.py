"""Artifacts: a model file (or directory) plus a manifest that says exactly how it was made."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edgekit import __version__, atomic
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


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


@dataclass
class Artifact:
    path: Path
    manifest: dict

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def size_bytes(self) -> int:
        return int(self.manifest["size_bytes"])

    def to_dict(self) -> dict:
        return {"path": str(self.path), "manifest_path": str(manifest_path(self.path)), **self.manifest}


def write_manifest(artifact: Path, manifest: dict) -> Artifact:
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **manifest}
    atomic.write_json(manifest_path(artifact), manifest)
    return Artifact(artifact, manifest)


def load_artifact(path: Path) -> Artifact | None:
    """The artifact at `path` if it exists with a manifest whose size and digest still match."""
    mp = manifest_path(path)
    if not ((path.is_file() or path.is_dir()) and mp.is_file()):
        return None
    try:
        m = json.loads(mp.read_text())
    except ValueError:
        return None
    if m.get("size_bytes") != artifact_size(path):
        return None
    return Artifact(path, m)
