"""`edgekit targets`: hardware targets."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
@click.pass_context
def targets(ctx: click.Context, as_json: bool) -> None:
    """List hardware targets. Multi-GPU forms: 8xh100, 2xrtx4090.

    Add your own by dropping NAME.toml into the directory `edgekit targets dir` prints.
    """
    if ctx.invoked_subcommand:
        return
    from edgekit.profiles.target import list_targets

    ts = list_targets()
    if as_json:
        render.emit_json([t.to_dict() for t in ts])
        return
    from rich.table import Table

    t = Table(title="edgekit targets (use NxNAME for several devices)")
    for col in ("name", "device", "memory", "bandwidth", "BF16 / FP8 TFLOPS", "CC", "source"):
        t.add_column(col)
    for tg in ts:
        d = tg.device
        tf = d.tflops
        t.add_row(
            tg.name,
            d.description,
            render.gib(d.memory_bytes),
            f"{d.bandwidth_bytes_s / 1e9:,.0f} GB/s",
            f"{tf.get('bf16', '-')} / {tf.get('fp8', '-')}" if d.is_gpu else f"{tf.get('fp32', '-')} (fp32)",
            ".".join(map(str, d.compute_capability)) if d.compute_capability else ",".join(d.isa[-4:]),
            d.source,
        )
    render.console().print(t)


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def show(name: str, as_json: bool) -> None:
    """One target with the formats it runs natively, slowly, or not at all."""
    from edgekit.formats import default_formats, support
    from edgekit.profiles.target import get_target

    tg = get_target(name)
    d = tg.to_dict()
    d["formats"] = {
        f.id: {"level": (s := support(f, tg.device)).level, "reason": s.reason} for f in default_formats()
    }
    if as_json:
        render.emit_json(d)
        return
    c = render.console()
    c.print(
        f"[bold]{tg.name}[/bold]  {d['description']}"
        + (f"  x{tg.count} over {d['interconnect']}" if tg.count > 1 else "")
    )
    c.print(
        f"  memory     {render.gib(tg.device.memory_bytes)} per device, "
        f"bandwidth {d['bandwidth_gbs_per_device']:,} GB/s"
    )
    c.print(
        f"  compute    {d['tflops_per_device']} TFLOPS"
        + (f", CC {d['compute_capability']}" if d["compute_capability"] else "")
    )
    if d["isa"]:
        c.print(f"  ISA        {' '.join(d['isa'])}")
    for n in d["notes"]:
        c.print(f"  note       {n}")
    for fid, s in d["formats"].items():
        colour = {"native": "green", "slow": "yellow", "no": "red"}[s["level"]]
        c.print(f"  [{colour}]{s['level']:6s}[/{colour}] {fid:14s} {s['reason']}")


@targets.command("probe")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def probe(as_json: bool) -> None:
    """Measure this machine's memory bandwidth again and cache it."""
    from edgekit.profiles import cpu

    facts = cpu.read_cpu_facts()
    result = cpu.run_probe()
    cpu.save_probe(facts, result)
    if as_json:
        render.emit_json(result)
        return
    click.echo(
        f"read {result['read_bytes_s'] / 1e9:.1f} GB/s, copy {result['copy_bytes_s'] / 1e9:.1f} GB/s "
        f"({result['threads']} threads, {result['buffer_mib']} MiB, best of {result['repeats']})"
    )


@targets.command("dir")
def targets_dir() -> None:
    """Print the directory where your own target TOML files go."""
    from edgekit.paths import user_targets_dir

    click.echo(str(user_targets_dir()))
