"""`edgekit runtimes`: the registered runtimes, whether each runs here, and what installs it."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.command("runtimes")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def runtimes_cmd(as_json: bool) -> None:
    """List runtimes (entry-point group `edgekit.runtimes`): version, formats, devices, the options
    `-o KEY=VALUE` takes for each (`edgekit bench`, `edgekit eval`), and why one is unavailable and
    which extra installs it."""
    from edgekit.runtimes.registry import discover

    infos = discover()
    if as_json:
        render.emit_json([i.to_dict() for i in infos])
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="edgekit runtimes")
    for col in ("name", "status", "version", "formats", "devices", "options", "notes"):
        t.add_column(col)
    for i in infos:
        status = "[green]available[/green]" if i.available else "[red]unavailable[/red]"
        notes = (
            i.description
            if i.available
            else f"{i.reason}" + (f"; {i.install_hint}" if i.install_hint else "")
        )
        t.add_row(
            escape(i.name),
            status,
            escape(i.version or "-"),
            escape(", ".join(i.formats) or "?"),
            escape(", ".join(i.devices) or "?"),
            escape(", ".join(i.to_dict()["options"]) or "-"),
            escape(notes),
        )
    render.console().print(t)
