"""`edgekit formats`: the format families and the formats each offers."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.command("formats")
@click.option("--target", "-t", "target", default=None, help="Also say how TARGET runs each format.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def formats_cmd(target: str | None, as_json: bool) -> None:
    """List the format families and their formats (ids for --format / --formats).

    Every family also builds ids beyond those listed where it says so (gguf:Q4_0 and any
    llama.cpp mix; gptq:w4g64 and other bit widths and group sizes).
    """
    from edgekit.formats import families, format_dict, support

    device = None
    if target:
        from edgekit.profiles.target import get_target

        device = get_target(target).device
    fams = families()
    if as_json:
        out = []
        for fam in fams:
            d = fam.to_dict()
            if device is not None:
                for f, fd in zip(fam.formats(), d["formats"], strict=True):
                    s = support(f, device)
                    fd["support"] = {"level": s.level, "reason": s.reason}
                    fd["runtime"] = f.runtime_for(device.kind)
            out.append(d)
        render.emit_json({"families": out, "target": target})
        return
    from rich.table import Table

    t = Table(title="edgekit formats" + (f" on {target}" if target else ""))
    cols = ["id", "family", "runtimes", "description"] + (["on target", "why"] if device else [])
    for col in cols:
        t.add_column(col)
    for fam in fams:
        for f in fam.formats():
            row = [f.id, fam.name, ", ".join(f.runtimes), format_dict(f)["description"]]
            if device is not None:
                s = support(f, device)
                row += [s.level, s.reason]
            t.add_row(*row)
    c = render.console()
    c.print(t)
    for fam in fams:
        flags = ", ".join(fam.to_dict()["build_options"]) or "none"
        c.print(f"  {fam.name:<6} {fam.description} (build options: {flags})")
