"""The runtime protocol: what the quality and speed code may rely on, whatever the engine.

Registering a runtime
=====================

Runtimes are found through the Python entry-point group ``edgekit.runtimes``; edgekit's own
are registered the same way, so a third party adds one without touching edgekit::

    # the third party's pyproject.toml
    [project.entry-points."edgekit.runtimes"]
    myengine = "mypackage.edgekit_myengine"      # a module (or any object) with the attributes below

The entry-point name should equal the module's ``name``. A module that fails to import, or
lacks a required attribute, is listed by ``edgekit runtimes`` as unavailable with the reason;
it never breaks edgekit. Importing the module must be cheap (the planner imports it to read
its capabilities): import the engine inside ``available()`` and ``load()``, never at the top.

Required module attributes
--------------------------
``name: str``
    What ``--runtime`` takes and what reports print ("llama.cpp", "transformers").
``formats: tuple[str, ...]``
    Format ids or families it serves (see ``edgekit.formats``): a family ("gguf", "bf16",
    "gptq", "awq", "fp8") serves every format of that family, a full id ("fp8:dynamic")
    only that one.
``devices: tuple[str, ...]``
    Device kinds it can run on: "cpu", "cuda".
``extra: str | None``
    The edgekit extra that installs its dependencies (``pip install "edgekit[<extra>]"``);
    None for a runtime that is not part of edgekit (give ``install`` instead).
``available() -> tuple[bool, str]``
    ``(True, "<package> <version>")`` when usable, else ``(False, one-line reason)``. Cheap
    (may import the engine, must not load a model) and must not raise.
``load(path, **options) -> Session``
    Open the artifact at ``path`` (a file, or a checkpoint directory). Must accept these
    keywords, ignoring those that mean nothing to it (see ``LOAD_OPTIONS``):
    ``n_ctx`` (int, the longest sequence the session must hold), ``threads`` (int | None,
    CPU threads; None = all), ``device`` ("cpu" | "cuda" | None = the best it has) and
    ``scoring`` (bool | None: True when ``logits`` will be called -- they must then be
    float32 of the model's full precision --, False when not, so the runtime may skip keeping
    every position's logits or run as deployed; None = its default). The fields of its
    ``Options`` (below) arrive as further keywords. Errors a user can act on are raised as
    ``edgekit.errors.EdgekitError``.

Optional module attributes: description and install
---------------------------------------------------
``install: str``       install hint shown when unavailable (overrides the one built from ``extra``)
``description: str``   one line for ``edgekit runtimes``
``packages: tuple[str, ...]``  distributions whose versions go into reports ("llama-cpp-python")
``prepare(path) -> path``  one-time work before a load (e.g. an export), kept out of bench's load time

Optional module attributes: capabilities (``Capabilities`` collects them; defaults in brackets)
-----------------------------------------------------------------------------------------------
``Options: type``  [no options]
    A dataclass whose fields (each with a default) are the runtime's own options; the CLI
    takes them as ``-o key=value`` (``edgekit bench``, ``edgekit eval``), validated against
    the fields (edgekit.runtimes.options), and they reach ``load()`` as keywords.
``kv_cache_types: tuple[str, ...]``  [("f16",)]
    The KV-cache element types it offers (``KV_TYPES`` names), the first one the one it
    falls back to.
``kv_fallback: dict[str, str]``  [{}]
    What it plans a KV type it lacks as (llama.cpp: fp8 -> q8_0); otherwise f16 when it
    offers f16, else its first type.
``kv_cache_bytes(arch, ctx, kv_type, seqs, options) -> int``  [``default_kv_bytes``]
    Bytes of KV cache it allocates for ``seqs`` sequences of ``ctx`` tokens with elements of
    ``kv_type`` (a ``KV_TYPES`` name it offers), over all devices: how the engine sizes its
    cache (context padding, sliding-window caches, latent attention), from the ``Arch``'s
    facts. The default is ``Arch.kv_bytes``: every token of every layer, sliding-window
    layers their window. Pure arithmetic: ``edgekit plan`` calls it.
``memory_overhead(arch, device, batch, options[, ctx, prompt]) -> int``  [``default_overhead``]
    Bytes per device beyond weights and KV cache that the planner adds: CUDA context and
    compute buffers (``default_overhead``), and whatever the engine reserves (vLLM leaves
    ``1 - gpu_memory_utilization`` of each GPU unused). ``device`` is an
    ``edgekit.profiles`` Device (``kind`` "cpu" | "gpu", ``memory_bytes``); ``options`` an
    instance of ``Options``; a model that declares the keywords ``ctx`` and ``prompt`` also
    gets the context and the prompt prefilled at once (llama.cpp, transformers and
    onnxruntime size their CPU prefill buffers from them: edgekit.runtimes.cpu_memory).
    Pure arithmetic: ``edgekit plan`` calls it.
``layer_split: str | None``  [None: tensor parallel across devices]
    A runtime that splits a model across devices by layers says how it is spelled
    ("llama.cpp --split-mode layer"); the planner then plans a layer split.
``host_embedding: bool``  [False]
    On a GPU it keeps the input token embedding in host RAM (llama.cpp).
``plans_as: dict[str, str]``  [{}]
    Format ids it runs as another format, for the planner's size model (onnxruntime runs
    a plain checkpoint, "bf16", as its fp32 export: {"bf16": "onnx:fp32"}).
``server: bool``  [False]
    It runs a server: ``edgekit bench`` measures it with the serving benchmark
    (edgekit.bench.serve), and its session is a ``ServerSession``
    (edgekit.runtimes.serving).

Session
-------
``tokenize``, ``generate`` and ``close`` as in ``Session`` below. Quality scoring uses
``logits`` (full float32 logits), or, where the session offers ``prompt_logprobs(tokens, k)``
(a server that returns top-K prompt log-probabilities, not logits), that, with ``k`` its
``max_logprobs``. ``edgekit bench`` needs ``generate_tokens`` (``SpeedSession``) and reads the
optional attribute ``device`` ("cpu" | "cuda", where the model actually runs; default "cpu").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.models.arch import Arch
    from edgekit.profiles.device import Device

# the attributes every runtime module defines, and the load() keywords every runtime accepts
REQUIRED_ATTRIBUTES = ("name", "formats", "devices", "extra", "available", "load")
LOAD_OPTIONS = ("n_ctx", "threads", "device", "scoring")
DEVICE_KINDS = ("cpu", "cuda")

GIB = 1024**3
CUDA_CONTEXT = int(0.5 * GIB)  # per GPU
UBATCH = 512  # tokens per compute step the compute buffers are sized for
CPU_PROCESS = int(0.25 * GIB)  # interpreter, libraries, tokenizer

# bytes per cached element; llama.cpp's q8_0 / q4_0 blocks carry an fp16 scale per 32
KV_TYPES = {"f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "fp8": 1.0, "f32": 4.0}


class NotSupported(EdgekitError):
    """A runtime cannot do what was asked (e.g. batch > 1); the reason is reported, not faked."""


@dataclass(frozen=True)
class NoOptions:
    """The options of a runtime that declares none."""


def default_overhead(arch: Arch, device: Device, batch: int = 1, options: object = None) -> int:
    """The memory a runtime needs per device beyond weights and KV cache (an estimate):
    compute buffers of UBATCH tokens x 4 B x (vocab + 6 x hidden + 2 x MLP width), plus the
    CUDA context on a GPU, or the interpreter and libraries on the CPU. llama.cpp,
    transformers and onnxruntime use it on a GPU only; on the CPU they have a measured model
    (edgekit.runtimes.cpu_memory)."""
    width = max(arch.ffn, arch.expert_ffn * arch.experts_per_token + arch.shared_expert_ffn)
    compute = UBATCH * 4 * (arch.vocab + 6 * arch.hidden + 2 * width)
    if device.kind == "cpu":
        return compute + CPU_PROCESS
    return CUDA_CONTEXT + compute


OverheadModel = Callable[..., int]


def _takes(fn: Callable[..., Any], keyword: str) -> bool:
    """Whether `fn` accepts `keyword` (an overhead model written before ctx/prompt existed
    takes only arch, device, batch, options)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def default_kv_bytes(
    arch: Arch, ctx: int, kv_type: str = "f16", seqs: int = 1, options: object = None
) -> int:
    """KV cache of `seqs` sequences of `ctx` tokens: K and V of every layer for every token,
    sliding-window layers their window (`Arch.kv_bytes`), KV_TYPES bytes per element."""
    return int(arch.kv_bytes(ctx, KV_TYPES[kv_type], seqs))


KVModel = Callable[["Arch", int, str, int, Any], int]


@dataclass(frozen=True)
class Capabilities:
    """What a runtime declares (module attributes, see the module docstring), with defaults."""

    formats: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    kv_cache_types: tuple[str, ...] = ("f16",)
    kv_fallback: dict[str, str] = field(default_factory=dict)
    server: bool = False
    layer_split: str | None = None
    host_embedding: bool = False
    plans_as: dict[str, str] = field(default_factory=dict)
    options: type = NoOptions
    overhead_model: OverheadModel = default_overhead
    kv_model: KVModel = default_kv_bytes

    @classmethod
    def of(cls, mod: object) -> Capabilities:
        """The capabilities a runtime module declares; malformed declarations raise
        EdgekitError with a one-line reason (the registry reports it unavailable)."""

        def tup(v: object) -> tuple[str, ...]:
            if isinstance(v, str):
                return (v,)
            try:
                return tuple(str(x) for x in v)  # type: ignore[attr-defined]
            except TypeError:
                return ()

        opts = getattr(mod, "Options", NoOptions)
        if not (isinstance(opts, type) and is_dataclass(opts)):
            raise EdgekitError("its Options is not a dataclass")
        no_default = [f.name for f in fields(opts) if f.default is MISSING and f.default_factory is MISSING]
        if no_default:
            raise EdgekitError(f"its Options field {no_default[0]} has no default")
        kv = tup(getattr(mod, "kv_cache_types", ("f16",))) or ("f16",)
        over = getattr(mod, "memory_overhead", default_overhead)
        if not callable(over):
            raise EdgekitError("its memory_overhead is not callable")
        kv_model = getattr(mod, "kv_cache_bytes", default_kv_bytes)
        if not callable(kv_model):
            raise EdgekitError("its kv_cache_bytes is not callable")
        split = getattr(mod, "layer_split", None)
        return cls(
            formats=tup(getattr(mod, "formats", ())),
            devices=tup(getattr(mod, "devices", ())),
            kv_cache_types=kv,
            kv_fallback={str(k): str(v) for k, v in dict(getattr(mod, "kv_fallback", {}) or {}).items()},
            server=bool(getattr(mod, "server", False)),
            layer_split=str(split) if split else None,
            host_embedding=bool(getattr(mod, "host_embedding", False)),
            plans_as={str(k): str(v) for k, v in dict(getattr(mod, "plans_as", {}) or {}).items()},
            options=opts,
            overhead_model=over,
            kv_model=kv_model,
        )

    def kv_type_for(self, requested: str) -> str:
        """The KV-cache type this runtime runs when `requested` is asked for."""
        if requested in self.kv_cache_types:
            return requested
        kv = self.kv_fallback.get(requested, "f16")
        return kv if kv in self.kv_cache_types else self.kv_cache_types[0]

    def overhead(
        self,
        arch: Arch,
        device: Device,
        batch: int = 1,
        options: object = None,
        ctx: int | None = None,
        prompt: int | None = None,
    ) -> int:
        """Bytes per device beyond weights and KV cache (the runtime's memory model); `ctx` and
        `prompt` (the context and the prompt prefilled at once) reach a model that takes them."""
        opts = options if options is not None else self.options()
        extra = {k: v for k, v in (("ctx", ctx), ("prompt", prompt)) if _takes(self.overhead_model, k)}
        return int(self.overhead_model(arch, device, batch, opts, **extra))

    def kv_bytes(self, arch: Arch, ctx: int, kv_type: str, seqs: int = 1, options: object = None) -> int:
        """Bytes of KV cache for `seqs` sequences of `ctx` tokens (the runtime's KV rule)."""
        opts = options if options is not None else self.options()
        return int(self.kv_model(arch, ctx, kv_type, seqs, opts))

    def planned_format(self, fmt_id: str) -> str:
        """The format id the planner sizes `fmt_id` as when this runtime runs it."""
        return self.plans_as.get(fmt_id, fmt_id)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int
    load_s: float
    prompt_s: float  # time to first token (prefill + first sample)
    decode_s: float  # the remaining tokens
    extra: dict = field(default_factory=dict)
    batch: int = 1  # sequences decoded together; prompt_tokens and generated_tokens are per sequence

    @property
    def prefill_tok_s(self) -> float:
        return self.batch * self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else float("nan")

    @property
    def decode_tok_s(self) -> float:
        n = self.generated_tokens - 1
        return self.batch * n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")


class Session(Protocol):
    """A loaded model."""

    n_vocab: int

    def logits(self, tokens: list[int]):
        """float32 array (len(tokens), n_vocab): next-token logits after each position."""

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, prompt: str, max_tokens: int) -> Generation: ...

    def close(self) -> None: ...


class SpeedSession(Session, Protocol):
    """What `edgekit bench` needs on top of `Session`."""

    device: str  # "cpu" | "cuda": where the model runs

    def generate_tokens(self, tokens: list[int], max_tokens: int, batch: int = 1) -> Generation:
        """Greedy-decode exactly `max_tokens` tokens (never stopping at EOS) after `tokens`,
        for `batch` copies of the prompt decoded together, starting from an empty cache (no
        prefix reuse between calls).

        Timings: `prompt_s` from the call until the first new token of every sequence is
        known (TTFT: prefill + first sample); `decode_s` from then until the last token.
        `prompt_tokens` and `generated_tokens` are per sequence, `batch` is set, `text` may
        be "". Per-token work beyond the engine's own step must be kept out of the loop.
        Raise `NotSupported(reason)` for a batch size the engine cannot run.
        """


@dataclass
class TopK:
    """A runtime's top-K log-probabilities over a prompt, per position p (predicting token p+1):
    `ids` and `logprobs` best first, `actual` = log q of the real next token, `k` asked for."""

    ids: list
    logprobs: list
    actual: list
    k: int


class TopKSession(Protocol):
    """A session that gives prompt log-probabilities instead of logits (a server)."""

    n_vocab: int | None
    max_logprobs: int

    def tokenize(self, text: str) -> list[int]: ...

    def prompt_logprobs(self, tokens: list[int], k: int | None = None) -> TopK: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """A runtime module (see the module docstring for the full contract)."""

    name: str
    formats: tuple[str, ...]
    devices: tuple[str, ...]
    extra: str | None

    def available(self) -> tuple[bool, str]:
        """(usable, why not / version)."""

    def load(self, path, **options) -> Session: ...
