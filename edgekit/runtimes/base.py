"""The runtime protocol: what the quality and speed code may rely on, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int
    load_s: float
    prompt_s: float  # time to first token (prefill + first sample)
    decode_s: float  # the remaining tokens
    extra: dict = field(default_factory=dict)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else float("nan")

    @property
    def decode_tok_s(self) -> float:
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")


class Session(Protocol):
    """A loaded model."""

    n_vocab: int

    def logits(self, tokens: list[int]):
        """float32 array (len(tokens), n_vocab): next-token logits after each position."""

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, prompt: str, max_tokens: int) -> Generation: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """(usable, why not / version)."""

    def load(self, path, **options) -> Session: ...
