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
it never breaks edgekit.

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
    ``scoring`` (bool | None: False when ``logits`` will not be called, so the runtime may
    skip keeping every position's logits; None = its default). Errors a user can act on
    are raised as ``edgekit.errors.EdgekitError``.

Optional module attributes
--------------------------
``install: str``       install hint shown when unavailable (overrides the one built from ``extra``)
``description: str``   one line for ``edgekit runtimes``
``packages: tuple[str, ...]``  distributions whose versions go into reports ("llama-cpp-python")
``prepare(path) -> path``  one-time work before a load (e.g. an export), kept out of bench's load time

Session
-------
``tokenize``, ``logits``, ``generate`` and ``close`` as in ``Session`` below (quality needs
``logits``). ``edgekit bench`` needs ``generate_tokens`` (``SpeedSession``) and reads the
optional attribute ``device`` ("cpu" | "cuda", where the model actually runs; default "cpu").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from edgekit.errors import EdgekitError

# the attributes every runtime module defines, and the load() keywords every runtime accepts
REQUIRED_ATTRIBUTES = ("name", "formats", "devices", "extra", "available", "load")
LOAD_OPTIONS = ("n_ctx", "threads", "device", "scoring")
DEVICE_KINDS = ("cpu", "cuda")


class NotSupported(EdgekitError):
    """A runtime cannot do what was asked (e.g. batch > 1); the reason is reported, not faked."""


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


class Runtime(Protocol):
    """A runtime module (see the module docstring for the full contract)."""

    name: str
    formats: tuple[str, ...]
    devices: tuple[str, ...]
    extra: str | None

    def available(self) -> tuple[bool, str]:
        """(usable, why not / version)."""

    def load(self, path, **options) -> Session: ...
