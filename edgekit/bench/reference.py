"""The reference side of quality measurement: the unquantized model, its store, and scoring
of a GGUF artifact against it. Stores are cached by model revision, text, window and K."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from edgekit.artifact import safe_stem
from edgekit.bench.quality import QualityResult, ReferenceStore, StoreKey, build_reference, score
from edgekit.paths import cache_dir

DEFAULT_WINDOW = 512
DEFAULT_K = 8192
# references up to this size are run in F32 (exactly the checkpoint's values, F32 compute);
# larger ones as BF16 GGUF, which holds BF16 weights exactly but computes in lower precision
F32_REFERENCE_MAX_BYTES = 4 * 1024**3


def reference_gguf(checkpoint, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """An unquantized GGUF of the checkpoint, built once and cached."""
    from edgekit.quantize.gguf import Recipe, convert

    total, _ = checkpoint.entry.arch.param_counts()
    mix = "F32" if total * 4 <= F32_REFERENCE_MAX_BYTES else "BF16"
    path = cache_dir() / "reference" / f"{safe_stem(checkpoint.entry.name)}-{checkpoint.revision}-{mix}.gguf"
    if not path.is_file():
        convert(checkpoint, path, Recipe(mix=mix), progress)
    return path


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reference_store(
    checkpoint,
    text: str,
    window: int = DEFAULT_WINDOW,
    k: int = DEFAULT_K,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceStore:
    from edgekit.runtimes import llamacpp

    key = StoreKey(checkpoint.revision, text_sha(text), window, k)
    path = cache_dir() / "quality" / f"{safe_stem(checkpoint.entry.name)}-{key.slug()}.npz"
    if path.is_file():
        return ReferenceStore.load(path, key)
    gguf_path = reference_gguf(checkpoint)
    session = llamacpp.load(gguf_path, n_ctx=window)
    try:
        tokens = session.tokenize(text)
        meta = {
            "reference": gguf_path.name,
            "runtime": llamacpp.available()[1],
            "model": checkpoint.entry.name,
            "revision": checkpoint.revision,
            "text_tokens": len(tokens),
        }
        store = build_reference(session, tokens, key, meta, progress)
    finally:
        session.close()
    store.save(path)
    return store


def score_gguf(
    path: Path,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    from edgekit.runtimes import llamacpp

    session = llamacpp.load(path, n_ctx=store.key.window, threads=threads)
    try:
        return score(session, store, progress)
    finally:
        session.close()


def score_artifact(
    artifact,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    """Score any artifact against the store through the runtime that serves its format on
    this machine: llama.cpp for GGUF, transformers (float32 logits) for the safetensors formats.
    Tokens are the store's, so every format is compared on exactly the same positions."""
    if artifact.format.startswith("gguf:"):
        return score_gguf(artifact.path, store, threads=threads, progress=progress)
    if artifact.format.startswith("onnx:"):
        from edgekit.runtimes import onnxruntime as ort

        session = ort.load(artifact.path, threads=threads, n_ctx=store.key.window)
        try:
            return score(session, store, progress)
        finally:
            session.close()
    return score_checkpoint_dir(artifact.path, store, threads=threads, progress=progress)


def score_checkpoint_dir(
    path: Path,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    from edgekit.runtimes import transformers as rt

    session = rt.load(path, dtype="float32", threads=threads)
    try:
        if int(store.top_ids.max()) >= session.n_vocab:
            from edgekit.errors import EdgekitError

            raise EdgekitError(
                f"{path}: its vocabulary of {session.n_vocab} does not cover the reference's tokens"
            )
        return score(session, store, progress)
    finally:
        session.close()


def score_vllm(
    path: Path,
    store: ReferenceStore,
    k: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **engine,
) -> QualityResult:
    """Score a checkpoint served by vLLM: its top-K prompt log-probabilities on the store's
    tokens (edgekit.bench.quality.score_sparse). `engine` goes to the vLLM runtime's load."""
    from edgekit.bench.quality import score_sparse
    from edgekit.runtimes import vllm as rt

    # one generated token beyond the window: vLLM must have room to sample it
    k = k or rt.DEFAULT_MAX_LOGPROBS
    session = rt.load(
        path, n_ctx=store.key.window + 1, log_path=rt.new_log_path(Path(path).name), max_logprobs=k, **engine
    )
    try:
        if session.n_vocab is not None and int(store.top_ids.max()) >= session.n_vocab:
            from edgekit.errors import EdgekitError

            raise EdgekitError(
                f"{path}: its vocabulary of {session.n_vocab} does not cover the reference's tokens"
            )
        return score_sparse(lambda toks: session.prompt_logprobs(toks, k), store, progress)
    finally:
        session.close()
