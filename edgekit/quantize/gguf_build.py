"""Build a GGUF artifact: resolve the model, get an importance matrix, convert, write the manifest."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from edgekit import atomic
from edgekit.artifact import (
    Artifact,
    Manifest,
    build_lock,
    current_artifact,
    describe_source,
    publish,
    safe_stem,
    sha256_file,
    staging_path,
    tool_versions,
)
from edgekit.atomic import atomic_path
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir
from edgekit.progress import Progress
from edgekit.text import default_calibration_text, read_text_file

# Q8_0 and the float types ignore an importance matrix (ggml's quantizers for them take none)
_IMATRIX_USELESS = {"F32", "F16", "BF16", "Q8_0"}
IMATRIX_CTX = 512


def importance_matrix(
    checkpoint, mode: str, calibration: str | None = None, progress: Progress | None = None
):
    """(Imatrix or None, path of its file or None) for mode 'auto', 'none' or a file path.

    'auto' collects it with llama.cpp on the model's unquantized reference GGUF (edgekit's
    cached F32/BF16 conversion, which quality measurement uses too), as llama-imatrix would;
    with transformers' forward hooks on the checkpoint only where llama.cpp cannot (no
    llama-cpp-python, or no reference GGUF for this model). The collector is part of the cache
    key and is recorded in the file (imatrix.collector in the manifest's imatrix_summary)."""
    from edgekit.quantize import imatrix as im

    progress = progress or Progress()
    if mode == "none":
        return None, None
    if mode != "auto":
        return im.load(Path(mode)), Path(mode)
    text = read_text_file(calibration, "calibration text") if calibration else default_calibration_text()
    collector = _imatrix_collector(checkpoint)
    key = hashlib.sha256(
        f"{checkpoint.revision}|{IMATRIX_CTX}|{collector}|".encode() + text.encode()
    ).hexdigest()[:16]
    cached = cache_dir() / "imatrix" / f"{safe_stem(checkpoint.entry.name)}-{key}.imatrix.gguf"
    # a sealed cache entry (edgekit.atomic.seal): a damaged or unsealed one is computed again
    with atomic.locked(cached):
        if atomic.intact(cached):
            progress.say(f"importance matrix: cached {cached.name}")
            return im.load(cached), cached
        dataset = Path(calibration).name if calibration else "edgekit:calibration.txt"
        if collector.startswith("llama.cpp"):
            from edgekit.quantize import imatrix_llamacpp
            from edgekit.quantize.unquantized import reference_gguf

            progress.say("importance matrix: the reference GGUF (unquantized) for llama.cpp")
            ref = reference_gguf(checkpoint, progress.tensor)
            progress.say("importance matrix: running llama.cpp over the calibration text")
            result = imatrix_llamacpp.collect(
                ref, text, ctx=IMATRIX_CTX, dataset=dataset, progress=progress.chunk
            )
        else:
            progress.say("importance matrix: running the reference model over the calibration text")
            result = im.collect(checkpoint, text, ctx=IMATRIX_CTX, dataset=dataset, progress=progress.chunk)
        im.save(result, cached)
        atomic.seal(cached)
        return result, cached


def _imatrix_collector(checkpoint) -> str:
    """Who computes the 'auto' importance matrix: llama.cpp when it can run the model's
    reference GGUF, else transformers."""
    try:
        from edgekit.quantize import imatrix_llamacpp

        name = imatrix_llamacpp.collector_name()
    except ImportError:
        name = ""
    if name:
        from edgekit.quantize.unquantized import buildable

        if buildable(checkpoint.entry):
            return name
    from edgekit.quantize.imatrix import torch_collector_name

    try:
        return torch_collector_name()
    except ImportError:
        return "transformers"


def build_gguf(
    model,
    mix: str,
    out_dir: Path,
    imatrix: str = "auto",
    calibration: str | None = None,
    overrides: list[str] | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Artifact:
    from edgekit.models.source import open_checkpoint
    from edgekit.quantize.gguf import MIX_DEFAULT, Recipe, convert, parse_overrides

    progress = progress or Progress()
    mix = mix.upper()
    if mix not in MIX_DEFAULT:
        raise EdgekitError(f"unknown GGUF type '{mix}'", f"choose one of {', '.join(MIX_DEFAULT)}")
    tt = parse_overrides(overrides or [])
    if imatrix not in ("auto", "none") and not Path(imatrix).is_file():
        raise EdgekitError(f"importance matrix file {imatrix} not found")
    if isinstance(model, str):
        progress.say(f"resolving {model}")
        ck = open_checkpoint(model)
    else:
        ck = model  # an already resolved Checkpoint
    out_dir = Path(out_dir)
    stem = safe_stem(ck.entry.name)
    use_imatrix = imatrix if mix not in _IMATRIX_USELESS else "none"
    suffix = "" if use_imatrix == "none" else "-imat"
    dest = out_dir / f"{stem}-{mix}{suffix}.gguf"
    # one process builds, a second one on the same --out waits here and then reuses it
    with build_lock(dest):
        existing = current_artifact(
            dest, f"gguf:{mix}", ck.revision, {"overrides": [f"{p}={t}" for p, t in tt]}
        )
        if existing and not force:
            progress.say(f"up to date: {dest}")
            return existing
        im, im_path = importance_matrix(ck, use_imatrix, calibration, progress)
        recipe = Recipe(
            mix=mix,
            overrides=tt,
            imatrix=im.importances() if im else None,
            imatrix_source=str(im_path) if im_path else None,
            threads=threads,
        )
        progress.say(f"converting {ck.entry.name} to {mix} (one pass)")
        t0 = time.perf_counter()
        staging = staging_path(dest)
        result = convert(ck, staging, recipe, progress.tensor)
        seconds = time.perf_counter() - t0
        if (cached := result.tensor_cache) is not None and cached.hits + cached.misses:
            progress.say(
                f"tensor cache: {cached.hits} of {cached.hits + cached.misses} quantized tensors reused"
            )
        imatrix_file = None
        if im_path is not None:
            imatrix_file = out_dir / f"{stem}.imatrix.gguf"
            if im_path.resolve() != imatrix_file.resolve():
                with atomic_path(imatrix_file) as tmp:
                    shutil.copyfile(im_path, tmp)
        manifest = Manifest(
            format=f"gguf:{mix}",
            file=dest.name,
            layout="gguf",
            size_bytes=result.file_bytes,
            sha256=sha256_file(staging),
            bits_per_weight=round(result.bits_per_weight, 4),
            source=describe_source(ck),
            recipe={
                **recipe.to_dict(),
                "imatrix": imatrix_file.name if imatrix_file else None,
                "imatrix_summary": im.summary() if im else None,
                "calibration": calibration or ("edgekit:calibration.txt" if im else None),
            },
            tool_versions=tool_versions("llama-cpp-python", "gguf", "numpy", "transformers", "torch"),
            details={
                "n_params": result.n_params,
                "tensor_types": result.type_counts(),
                "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in result.tensors],
                "convert_seconds": round(seconds, 2),
                "tensor_cache": result.tensor_cache.to_dict() if result.tensor_cache else None,
            },
        )
        return publish(staging, dest, manifest)
