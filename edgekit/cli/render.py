"""Shared rendering: exact JSON for programs, rich tables for people."""

from __future__ import annotations

import json
import math
import sys

import click


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_default))


def _default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, set | tuple):
        return list(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def console():
    from rich.console import Console

    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def size(n: float) -> str:
    if abs(n) >= 1024**3:
        return f"{n / 1024**3:.2f} GiB"
    if abs(n) >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB"


def params(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.0f}M"


def rate(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}"


class progress_bars:
    """Rich progress bars for the long steps, or silence."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        from edgekit.progress import Progress

        if not self.enabled:
            return Progress()
        from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console(),
            transient=False,
        )
        self.bar.start()
        self.tasks: dict[str, TaskID] = {}

        def stage(text):
            self.bar.console.print(f"[dim]{text}[/dim]")

        def counter(key, label):
            def update(done, total):
                if key not in self.tasks:
                    self.tasks[key] = self.bar.add_task(label, total=total)
                self.bar.update(self.tasks[key], completed=done, total=total)

            return update

        chunk = counter("chunks", "importance matrix")
        tensors = counter("tensors", "tensors")
        windows = counter("windows", "quality windows")
        return Progress(stage=stage, tensor=lambda name, i, n: tensors(i, n), chunk=chunk, windows=windows)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
