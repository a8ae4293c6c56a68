"""The reference side of quality measurement: the unquantized model, its store, and scoring
of any artifact against it through the runtime registry. Stores are cached by model revision,
text, window, K, coverage and the store's version (what positions it scores).

A runtime is reached only through the registry and the protocol (edgekit.runtimes.base): the
one that serves the format (the format's choice for the CPU first, or the one named), loaded
with scoring=True, scored on its full logits (quality.score) or, for a session that gives
top-K prompt log-probabilities instead (a server such as vLLM), on those (quality.score_sparse)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import atomic
from edgekit.artifact import safe_stem
from edgekit.bench.quality import (
    QualityResult,
    ReferenceStore,
    ScoreState,
    Stop,
    StoreKey,
    build_reference,
    score,
    score_sparse,
    score_state,
)
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir

# the unquantized GGUF lives under quantize/ (llama.cpp collects the importance matrix on it too)
from edgekit.quantize.unquantized import F32_REFERENCE_MAX_BYTES, reference_gguf  # noqa: F401
from edgekit.runtimes import options as runtime_options
from edgekit.runtimes import registry

# the runtime that builds every reference: the unquantized GGUF through llama.cpp
REFERENCE_RUNTIME = "llama.cpp"

DEFAULT_WINDOW = 512
DEFAULT_K = 8192


def reference_unbuildable(entry) -> str:
    """Why the reference (the unquantized checkpoint as a GGUF, scored in llama.cpp) cannot be
    made of the model `entry` describes, or "" -- known before anything is opened."""
    from edgekit.formats import get_format

    fmt = get_format("gguf:F32")
    return fmt.impl.unbuildable(fmt, entry)


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reference_store(
    checkpoint,
    text: str,
    window: int = DEFAULT_WINDOW,
    k: int = DEFAULT_K,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceStore:
    key = StoreKey(checkpoint.revision, text_sha(text), window, k)
    path = cache_dir() / "quality" / f"{safe_stem(checkpoint.entry.name)}-{key.slug()}.npz"
    with atomic.locked(path):
        if atomic.intact(path):
            return ReferenceStore.load(path, key)
        store = _build_store(checkpoint, text, key, progress)
        store.save(path)
        atomic.seal(path)
        return store


def _build_store(checkpoint, text: str, key: StoreKey, progress) -> ReferenceStore:
    window = key.window
    gguf_path = reference_gguf(checkpoint)
    info = registry.get(REFERENCE_RUNTIME)
    rt: Any = info.module
    session = rt.load(gguf_path, n_ctx=window, scoring=True)
    try:
        # as llama-perplexity: the whole text with the vocabulary's special tokens (BOS when it
        # adds one), special-token text not parsed; BOS again in front of every window
        tokens = session.tokenize(text, add_bos=True, special=False)
        bos = session.bos_added
        meta = {
            "reference": gguf_path.name,
            "runtime": info.version,
            "model": checkpoint.entry.name,
            "revision": checkpoint.revision,
            "text_tokens": len(tokens),
        }
        store = build_reference(session, tokens, key, meta, progress, bos=bos)
    finally:
        session.close()
    return store


def scoring_runtime(fmt_id: str, runtime: str | None = None) -> registry.RuntimeInfo:
    """The registered runtime that scores format `fmt_id`: `runtime` when named (it must serve
    the format and run here), else the format's runtime for the CPU, else any that serves it."""
    if runtime:
        info = registry.find(runtime)
        if info.module is not None and info.formats and not info.serves(fmt_id):
            serving = [
                i.name for i in registry.discover(check=False) if i.module is not None and i.serves(fmt_id)
            ]
            raise EdgekitError(
                f"runtime {info.name} does not serve {fmt_id} (it serves {', '.join(info.formats)})",
                f"runtimes that do: {', '.join(serving)}" if serving else "see `edgekit runtimes`",
            )
        if not info.available:
            raise registry.RuntimeUnavailable(info)
        return info
    from edgekit.formats import get_format

    try:
        preferred: str | None = get_format(fmt_id).runtime_for("cpu")
    except EdgekitError:  # a family without a known variant ("gguf" of a bare file)
        preferred = None
    return registry.for_format(fmt_id, preferred=preferred)


def score_path(
    path: Path | str,
    fmt_id: str,
    store: ReferenceStore,
    runtime: str | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: object = None,
    option_pairs: tuple[str, ...] | list[str] = (),
    stop: Stop | None = None,
    state: ScoreState | None = None,
    on_window: Callable[[ScoreState], None] | None = None,
) -> QualityResult:
    """Score the artifact at `path` (format `fmt_id`) against the store through `runtime` (or
    the one that serves the format). `options` is that runtime's Options (or a mapping of its
    values), `option_pairs` `-o key=value` strings on top. Tokens are the store's, so every
    format is compared on exactly the same positions. `stop` may end the scoring after any
    window, `state` holds windows already scored (quality.score)."""
    info = scoring_runtime(fmt_id, runtime)
    return score_with(info, path, store, threads, progress, options, option_pairs, stop, state, on_window)


def score_with(
    info: registry.RuntimeInfo,
    path: Path | str,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: object = None,
    option_pairs: tuple[str, ...] | list[str] = (),
    stop: Stop | None = None,
    state: ScoreState | None = None,
    on_window: Callable[[ScoreState], None] | None = None,
) -> QualityResult:
    """Score `path` through the runtime `info` (see score_path)."""
    if state is not None and state.windows == store.n_windows:  # nothing left: no model to load
        return score_state(state, store)
    rt: Any = info.module
    if options is None or isinstance(options, dict):
        opts = runtime_options.build(info.options, option_pairs, options, runtime=info.name)
    else:
        opts = runtime_options.build(
            info.options, option_pairs, runtime_options.to_kwargs(options), info.name
        )
    kw = runtime_options.to_kwargs(opts)
    # a server generates one token after the prompt: room for it beyond the window
    n_ctx = store.key.window + (1 if info.server else 0)
    session = rt.load(path, n_ctx=n_ctx, threads=threads, scoring=True, **kw)
    try:
        n_vocab = getattr(session, "n_vocab", None)
        top_ids: Any = store.top_ids
        if n_vocab is not None and int(top_ids.max()) >= n_vocab:
            raise EdgekitError(f"{path}: its vocabulary of {n_vocab} does not cover the reference's tokens")
        topk = getattr(session, "prompt_logprobs", None)
        if callable(topk):  # top-K prompt log-probabilities, not logits (a server)
            k = int(getattr(session, "max_logprobs", 0) or 0) or None
            return score_sparse(lambda toks: topk(toks, k), store, progress, stop, state, on_window)
        return score(session, store, progress, stop, state, on_window)
    finally:
        session.close()


def score_artifact(
    artifact,
    store: ReferenceStore,
    runtime: str | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: object = None,
    stop: Stop | None = None,
    state: ScoreState | None = None,
    on_window: Callable[[ScoreState], None] | None = None,
) -> QualityResult:
    """Score an Artifact against the store (score_path on its path and format)."""
    return score_path(
        artifact.path, artifact.format, store, runtime, threads, progress, options, (), stop, state, on_window
    )


# ---- the older entry points, each one call of score_path ----------------------------------


def score_gguf(
    path: Path,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    return score_path(path, "gguf", store, REFERENCE_RUNTIME, threads=threads, progress=progress)


def score_checkpoint_dir(
    path: Path,
    store: ReferenceStore,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    """A checkpoint directory (BF16, GPTQ, AWQ, FP8) through the runtime its format names for the CPU."""
    from edgekit.bench.subject import checkpoint_format

    return score_path(path, checkpoint_format(Path(path)), store, threads=threads, progress=progress)


def score_vllm(
    path: Path,
    store: ReferenceStore,
    k: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **engine: Any,
) -> QualityResult:
    """A checkpoint served by vLLM: its top-K prompt log-probabilities on the store's tokens.
    `engine` are options of the vllm runtime."""
    opts = {**engine, "max_logprobs": k}
    from edgekit.bench.subject import checkpoint_format

    return score_path(path, checkpoint_format(Path(path)), store, "vllm", progress=progress, options=opts)
