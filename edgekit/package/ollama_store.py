"""Ollama's model store on disk, laid out exactly as Ollama writes it:

    <root>/blobs/sha256-<hex>                                   content-addressed layers
    <root>/manifests/<host>/<namespace>/<model>/<tag>           Docker manifest v2 JSON

The root is $OLLAMA_MODELS or ~/.ollama/models. Every file goes in through a temporary file
and a rename, a blob already present is reused, and a write that fails part-way removes the
blobs and directories it created, so a store is never left half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgekit import atomic
from edgekit.errors import EdgekitError

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
_IMAGE = "application/vnd.ollama.image."
LAYER_KINDS = ("model", "adapter", "projector", "template", "system", "params", "license", "messages")
MEDIA_TYPES = {kind: _IMAGE + kind for kind in LAYER_KINDS}
# the order Ollama's create writes layers in: weights, then template, system, licenses, params, messages
LAYER_ORDER = ("model", "adapter", "projector", "template", "system", "license", "params", "messages")

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def default_store() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


# ---- names ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelName:
    """`[host/][namespace/]model[:tag]`, checked with Ollama's rules (types/model/name.go):
    each part starts with a letter, digit or underscore and goes on with those, '-' and '.'
    (no '.' in a namespace; a host may hold ':' for a port); host up to 350 characters, the
    others up to 80."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        raw = text
        if not text or not text.strip():
            raise EdgekitError("empty model name", "give --name NAME[:TAG], e.g. --name smollm2:q8")
        if "://" in text:
            raise EdgekitError(f"invalid Ollama model name {raw!r}: give it without a URL scheme")
        if "\\" in text or "\x00" in text:
            raise EdgekitError(f"invalid Ollama model name {raw!r}: backslashes are not allowed")
        tag = ""
        if text.rfind(":") > text.rfind("/"):
            text, tag = text.rsplit(":", 1)
            if tag == "":
                raise EdgekitError(f"invalid Ollama model name {raw!r}: empty tag after ':'")
        parts = text.split("/")
        if len(parts) > 3:
            raise EdgekitError(f"invalid Ollama model name {raw!r}: at most host/namespace/model:tag")
        if any(p == "" for p in parts):
            raise EdgekitError(f"invalid Ollama model name {raw!r}: an empty part between '/'")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        name = cls(host, namespace, model, tag or DEFAULT_TAG)
        for kind, value in (("host", host), ("namespace", namespace), ("model", model), ("tag", name.tag)):
            problem = _part_problem(kind, value)
            if problem:
                raise EdgekitError(f"invalid Ollama model name {raw!r}: {problem}")
        return name

    @property
    def short(self) -> str:
        """The name as `ollama list` shows it."""
        prefix = ""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag

    def __str__(self) -> str:
        return self.short


def _part_problem(kind: str, value: str) -> str | None:
    limit = 350 if kind == "host" else 80
    if not value:
        return f"empty {kind}"
    if len(value) > limit:
        return f"the {kind} is {len(value)} characters long (at most {limit})"
    if not (value[0].isascii() and (value[0].isalnum() or value[0] == "_")):
        return f"the {kind} {value!r} must start with a letter, digit or underscore"
    for ch in value[1:]:
        if ch.isascii() and (ch.isalnum() or ch in "_-"):
            continue
        if ch == "." and kind != "namespace":
            continue
        if ch == ":" and kind == "host":
            continue
        return f"the {kind} {value!r} holds {ch!r}; allowed are letters, digits, '_', '-'" + (
            "" if kind == "namespace" else " and '.'"
        )
    if ".." in value:
        return f"the {kind} {value!r} holds '..'"
    return None


# ---- layers and manifests -------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # sha256:<hex>
    size: int

    @property
    def kind(self) -> str:
        if self.media_type == CONFIG_MEDIA_TYPE:
            return "config"
        return self.media_type.removeprefix(_IMAGE) if self.media_type.startswith(_IMAGE) else self.media_type

    def to_dict(self) -> dict:
        # Ollama's JSON field names and order
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def go_json(obj, sort_keys: bool = False) -> bytes:
    """JSON as Go's json.Encoder writes it: compact, '<', '>' and '&' escaped, one newline."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    for ch, esc in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return (text + "\n").encode("utf-8")


def manifest_bytes(config: Layer, layers: list[Layer]) -> bytes:
    return go_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_dict(),
            "layers": [layer.to_dict() for layer in layers],
        }
    )


def config_blob(model_family: str, model_type: str, file_type: str, layers: list[Layer]) -> bytes:
    """The image config Ollama writes next to the layers (model.ConfigV2): what `ollama show`
    reads for family, parameter size and quantization. architecture/os are fixed strings in
    Ollama; rootfs lists the layer digests as older Ollama releases wrote them."""
    return go_json(
        {
            "model_format": "gguf",
            "model_family": model_family,
            "model_families": [model_family],
            "model_type": model_type,
            "file_type": file_type,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        }
    )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> tuple[str, int]:
    """Digest and size of a file, read in chunks (model files are many GiB)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


@dataclass
class Manifest:
    name: ModelName
    path: Path
    raw: dict
    config: Layer | None
    layers: list[Layer]

    def layers_of(self, kind: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind == kind]


# ---- the store ------------------------------------------------------------------------------


class Store:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_store()

    def blob_path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise EdgekitError(f"invalid blob digest {digest!r}")
        return self.root / "blobs" / digest.replace(":", "-", 1)

    def manifest_path(self, name: ModelName) -> Path:
        return self.root.joinpath("manifests", *name.parts())

    def existing_name(self, name: ModelName) -> ModelName:
        """Ollama treats names case-insensitively: reuse the spelling a model already has."""
        base = self.root / "manifests"
        found: list[str] = []
        here = base
        for part in name.parts():
            if not here.is_dir():
                return name
            match = [p.name for p in here.iterdir() if p.name.lower() == part.lower()]
            if not match:
                return name
            found.append(part if part in match else match[0])
            here = here / found[-1]
        return ModelName(*found)

    def read_manifest(self, name: ModelName) -> Manifest:
        name = self.existing_name(name)
        path = self.manifest_path(name)
        if not path.is_file():
            raise EdgekitError(f"no model {name.short} in the Ollama store {self.root}", f"expected {path}")
        try:
            raw = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as e:
            raise EdgekitError(f"{path}: not a JSON manifest ({e})") from None
        if not isinstance(raw, dict):
            raise EdgekitError(f"{path}: the manifest is not a JSON object")

        def layer(d) -> Layer | None:
            if not isinstance(d, dict):
                return None
            try:
                return Layer(str(d["mediaType"]), str(d["digest"]), int(d["size"]))
            except (KeyError, TypeError, ValueError):
                return None

        raw_layers = raw.get("layers")
        layers = raw_layers if isinstance(raw_layers, list) else []
        return Manifest(name, path, raw, layer(raw.get("config")), [x for x in map(layer, layers) if x])

    def check_writable(self) -> None:
        """Fail before anything is written when the store cannot take files."""
        probe = self.root
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise EdgekitError(f"cannot write the Ollama store {self.root}: {probe} is not a directory")
        for sub in (self.root, self.root / "blobs", self.root / "manifests"):
            if sub.exists() and not sub.is_dir():
                raise EdgekitError(f"cannot write the Ollama store {self.root}: {sub} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise EdgekitError(f"cannot write the Ollama store {self.root}: {probe} is not writable")

    def writer(self) -> StoreWriter:
        return StoreWriter(self)


class StoreWriter:
    """Adds blobs and one manifest; `rollback()` removes what this writer created."""

    def __init__(self, store: Store):
        self.store = store
        self.created: list[Path] = []
        self.reused: list[str] = []

    def _mkdirs(self, d: Path) -> None:
        missing = []
        while not d.exists():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            m.mkdir()
            self.created.append(m)

    def add_bytes(self, data: bytes, media_type: str) -> Layer:
        digest = sha256_digest(data)
        layer = Layer(media_type, digest, len(data))
        dest = self.store.blob_path(digest)
        if self._present(dest, layer):
            return layer
        self._mkdirs(dest.parent)
        with atomic.atomic_path(dest) as tmp:
            tmp.write_bytes(data)
            os.chmod(tmp, 0o644)  # a server running as another user must read it
        self.created.append(dest)
        return layer

    def add_file(self, src: Path, media_type: str, digest: str, size: int, link: bool = True) -> Layer:
        """A large file as a blob: hard-linked when the store is on the same filesystem (no
        second copy of many GiB), copied otherwise; either way through a temporary name."""
        import shutil

        layer = Layer(media_type, digest, size)
        dest = self.store.blob_path(digest)
        if self._present(dest, layer, src):
            return layer
        self._mkdirs(dest.parent)
        with atomic.atomic_path(dest) as tmp:
            linked = False
            # a link shares the source's mode: a server running as another user must be able to read
            # it. And the atomic rename fsyncs through a writable handle. Otherwise, copy.
            readable_by_all = os.stat(src).st_mode & 0o444 == 0o444
            if link and readable_by_all and os.access(src, os.W_OK):
                try:
                    tmp.unlink()
                    os.link(src, tmp)
                    linked = True
                except OSError:
                    linked = False
            if not linked:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o644)
            if tmp.stat().st_size != size:
                raise EdgekitError(
                    f"{src} changed while it was being stored (size {tmp.stat().st_size} != {size})"
                )
        self.created.append(dest)
        return layer

    def _present(self, dest: Path, layer: Layer, src: Path | None = None) -> bool:
        """Reuse a blob only when it holds the right bytes; a damaged one is replaced."""
        if not dest.is_file() or dest.stat().st_size != layer.size:
            return False
        same_file = src is not None and os.path.samefile(src, dest)  # our own hard link: just hashed
        if same_file or hash_file(dest)[0] == layer.digest:
            self.reused.append(layer.digest)
            return True
        return False

    def write_manifest(self, name: ModelName, config: Layer, layers: list[Layer]) -> Path:
        path = self.store.manifest_path(name)
        self._mkdirs(path.parent)
        existed = path.exists()
        with atomic.atomic_path(path) as tmp:
            tmp.write_bytes(manifest_bytes(config, layers))
            os.chmod(tmp, 0o644)
        if not existed:
            self.created.append(path)
        return path

    def rollback(self) -> None:
        import contextlib

        for p in reversed(self.created):
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.rmdir()  # only when empty
                else:
                    p.unlink()
        self.created.clear()


def verify_layers(store: Store, manifest: Manifest) -> tuple[list[tuple[str, bool, str]], set[str]]:
    """Shape, media types, and every blob's presence, size and digest: the checks as
    (check, ok, detail), and the digests whose blobs verified."""
    out: list[tuple[str, bool, str]] = []
    verified: set[str] = set()
    raw = manifest.raw
    shape_ok = raw.get("schemaVersion") == 2 and raw.get("mediaType") == MANIFEST_MEDIA_TYPE
    out.append(
        (
            "manifest",
            shape_ok,
            "schemaVersion 2, Docker manifest v2"
            if shape_ok
            else f"schemaVersion {raw.get('schemaVersion')!r}, mediaType {raw.get('mediaType')!r}",
        )
    )
    entries = raw.get("layers") if isinstance(raw.get("layers"), list) else None
    if entries is None or len(entries) != len(manifest.layers):
        out.append(
            ("manifest layers", False, "layers is missing or has entries without mediaType/digest/size")
        )
    if manifest.config is None:
        out.append(("config", False, "the manifest has no config entry"))
    elif manifest.config.media_type != CONFIG_MEDIA_TYPE:
        out.append(
            (
                "config",
                False,
                f"config media type {manifest.config.media_type!r}, expected {CONFIG_MEDIA_TYPE}",
            )
        )
    known = set(MEDIA_TYPES.values())
    for layer in ([manifest.config] if manifest.config else []) + manifest.layers:
        label = f"{layer.kind} {layer.digest[7:19]}" if layer.digest.startswith("sha256:") else layer.kind
        if layer.media_type != CONFIG_MEDIA_TYPE and layer.media_type not in known:
            out.append((label, False, f"unknown media type {layer.media_type!r}"))
            continue
        if not _DIGEST.match(layer.digest):
            out.append((label, False, f"malformed digest {layer.digest!r}"))
            continue
        path = store.blob_path(layer.digest)
        if not path.is_file():
            out.append((label, False, f"blob missing: {path}"))
            continue
        size = path.stat().st_size
        if size != layer.size:
            out.append((label, False, f"size {size} on disk, {layer.size} in the manifest"))
            continue
        digest, _ = hash_file(path)
        if digest != layer.digest:
            out.append((label, False, f"digest mismatch: the blob hashes to {digest}"))
            continue
        verified.add(layer.digest)
        out.append((label, True, f"{layer.size} bytes, digest matches"))
    counts = {kind: len(manifest.layers_of(kind)) for kind in ("model", "template", "system", "params")}
    if counts["model"] != 1:
        out.append(("model layer", False, f"{counts['model']} model layers (expected exactly one)"))
    for kind in ("template", "system", "params"):
        if counts[kind] > 1:
            out.append((f"{kind} layer", False, f"{counts[kind]} {kind} layers (at most one)"))
    return out, verified
