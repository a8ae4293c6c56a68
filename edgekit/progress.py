"""Progress callbacks: the producers and measurements report through them, the CLI draws bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Progress:
    """Callbacks the CLI turns into progress bars; all optional."""

    stage: Callable[[str], None] | None = None
    tensor: Callable[[str, int, int], None] | None = None
    chunk: Callable[[int, int], None] | None = None  # importance-matrix windows
    windows: Callable[[int, int], None] | None = None  # reference / scoring windows

    def say(self, text: str) -> None:
        if self.stage:
            self.stage(text)
