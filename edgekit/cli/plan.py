"""`edgekit plan`: what fits on a target, before anything is downloaded."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.command("plan")
@click.argument("model")
@click.option("--target", "-t", "target_name", required=True, help="rtx4090, h100, h200, cpu, 8xh100, ...")
@click.option(
    "--ctx", type=int, default=None, help="Context length per sequence [default: min(model, 8192)]."
)
@click.option("--batch", type=int, default=1, show_default=True, help="Concurrent sequences.")
@click.option(
    "--kv-type", type=click.Choice(["f16", "bf16", "q8_0", "q4_0", "fp8"]), default="f16", show_default=True
)
@click.option(
    "--formats", "formats_csv", default=None, help="Comma-separated formats [default: all the target runs]."
)
@click.option(
    "--prompt-tokens",
    type=int,
    default=512,
    show_default=True,
    help="Prompt length for the prefill estimate.",
)
@click.option("--native-only", is_flag=True, help="Hide formats the target runs only on a slow path.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def plan_cmd(
    model, target_name, ctx, batch, kv_type, formats_csv, prompt_tokens, native_only, as_json
) -> None:
    """Memory and speed of MODEL in every format TARGET runs."""
    from edgekit.formats import get_format
    from edgekit.models.catalogue import resolve
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target

    entry = resolve(model)
    target = get_target(target_name)
    fmts = [get_format(f) for f in formats_csv.split(",") if f.strip()] if formats_csv else None
    p = plan(
        entry,
        target,
        ctx=ctx,
        batch=batch,
        kv_type=kv_type,
        formats=fmts,
        prompt_tokens=prompt_tokens,
        include_slow=not native_only,
    )
    if as_json:
        render.emit_json(p.to_dict())
        return
    _print(p)


def _print(p) -> None:
    from rich.table import Table

    total, active = p.model.arch.param_counts()
    tg = p.target
    c = render.console()
    moe = f", {render.params(active)} active" if p.model.arch.is_moe else ""
    c.print(
        f"[bold]{p.model.name}[/bold] ({render.params(total)} params{moe}) on [bold]{tg.name}[/bold] "
        f"({render.gib(tg.device.memory_bytes)} x {tg.count})"
        if tg.count > 1
        else f"[bold]{p.model.name}[/bold] ({render.params(total)} params{moe}) on [bold]{tg.name}[/bold] "
        f"({render.gib(tg.device.memory_bytes)})"
    )
    c.print(
        f"context {p.ctx:,} x {p.batch} sequence(s), KV cache {p.kv_type}, prefill estimate for a "
        f"{p.prompt_tokens}-token prompt"
    )
    t = Table()
    cols = [
        "format",
        "runtime",
        "layout",
        "bpw",
        "weights",
        "KV",
        "overhead",
        "per device",
        "fits",
        "max ctx",
        "decode tok/s ≤",
        "prefill tok/s ≤",
    ]
    for col in cols:
        t.add_column(col, justify="left" if col in ("format", "runtime", "layout", "fits") else "right")
    for r in p.rows:
        b = r.per_device
        if r.fits:
            fits = f"[green]yes[/green] (+{render.gib(b.headroom)})"
        else:
            fits = f"[red]no[/red] (-{render.gib(r.miss_bytes)})"
        lay = r.layout
        lay_s = {"single": "1 device", "layer-split": f"layers/{lay.pp}"}.get(
            lay.strategy,
            f"TP{lay.tp}" + (f" EP{lay.ep}" if lay.ep > 1 else "") + (f" PP{lay.pp}" if lay.pp > 1 else ""),
        )
        t.add_row(
            r.format + ("" if r.support.level == "native" else " [yellow](slow)[/yellow]"),
            r.runtime,
            lay_s,
            f"{r.bits_per_weight:.2f}",
            render.gib(r.weights_bytes),
            render.gib(b.kv_cache),
            render.gib(b.overhead),
            render.gib(b.total),
            fits,
            f"{r.max_context:,}" if r.max_context else "-",
            render.rate(r.decode_tok_s),
            render.rate(r.prefill_tok_s),
        )
    c.print(t)
    fitting = p.fitting
    if not fitting:
        best = min(p.rows, key=lambda r: r.miss_bytes, default=None)
        if best:
            c.print(
                f"[red]Nothing fits.[/red] The closest is {best.format}, "
                f"{render.gib(best.miss_bytes)} over per device."
            )
    else:
        c.print(f"{len(fitting)} of {len(p.rows)} formats fit; the smallest is {fitting[0].format}.")
    notes = sorted({n for r in p.rows for n in r.notes} | set(p.notes))
    for n in notes:
        c.print(f"  note: {n}")
    c.print(
        "[dim]weights, KV and roofline are computed from the architecture; overhead is an estimate "
        "(see --json 'method').[/dim]"
    )
