"""`edgekit models`: the catalogue."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List known checkpoints (`edgekit models show NAME` for one)."""
    if ctx.invoked_subcommand:
        return
    from edgekit.models.catalogue import catalogue

    entries = list(catalogue().values())
    if as_json:
        render.emit_json([e.to_dict() for e in entries])
        return
    from rich.table import Table

    t = Table(title="edgekit model catalogue")
    for col in ("name", "hub id", "params", "active", "context", "KV/token (BF16)", "license"):
        t.add_column(
            col, justify="right" if col in ("params", "active", "context", "KV/token (BF16)") else "left"
        )
    for e in entries:
        total, active = e.arch.param_counts()
        t.add_row(
            e.name,
            e.hub_id or "-",
            render.params(total),
            render.params(active) if e.arch.is_moe else "",
            f"{e.context:,}",
            render.size(e.arch.kv_bytes_per_token()),
            f"{e.license.name} ({e.license.tier})",
        )
    render.console().print(t)


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def show(name: str, as_json: bool) -> None:
    """Facts of one model: a catalogue name, a known hub id, a local dir / config.json, a GGUF."""
    from edgekit.formats import default_formats
    from edgekit.models.catalogue import resolve

    e = resolve(name)
    fmts = default_formats()
    d = e.to_dict()
    d["formats"] = [{"format": f.id, "runtimes": list(f.runtimes)} for f in fmts]
    builds = _builds(e)
    d["builds"] = builds
    if as_json:
        render.emit_json(d)
        return
    a = e.arch
    total, active = a.param_counts()
    c = render.console()
    c.print(f"[bold]{e.name}[/bold]  {e.hub_id or e.source}")
    c.print(
        f"  architecture   {a.family}, {a.n_layers} layers, hidden {a.hidden}, "
        f"heads {a.n_heads} q / {a.n_kv_heads} kv x {a.head_dim}, vocab {a.vocab:,}"
        f"{', tied embeddings' if a.tied_embeddings else ''}"
    )
    if a.is_moe:
        c.print(
            f"  experts        {a.n_experts} routed, {a.experts_per_token} per token, width {a.expert_ffn}"
            + (f", shared width {a.shared_expert_ffn}" if a.shared_expert_ffn else "")
        )
    elif a.ffn:
        c.print(f"  MLP width      {a.ffn}")
    c.print(
        f"  parameters     {render.params(total)} total"
        + (f", {render.params(active)} active per token" if a.is_moe else "")
    )
    if a.extra_params:
        c.print(f"                 includes {render.params(a.extra_params)}: {a.extra_params_note}")
    c.print(
        f"  KV cache       {a.kv_bytes_per_token(2.0):,.0f} bytes per token in BF16"
        + (
            f" (sliding window {a.sliding_window} on "
            f"{sum(a.is_sliding_layer(i) for i in range(a.n_layers))} of {a.n_layers} layers)"
            if a.sliding_window
            else ""
        )
    )
    c.print(f"  context        {e.context:,} tokens")
    c.print(f"  tokenizer      {e.tokenizer or 'not stated'}")
    g = e.extra.get("gguf")
    if g:
        c.print(
            f"  GGUF file      {g['file_type'] or 'file type not stated'}, {render.size(g['size_bytes'])}, "
            f"{g['tensors']} tensors, llama.cpp architecture {g['architecture']}"
        )
    lic = e.license
    c.print(f"  license        {lic.name} ({lic.tier})" + (f"  {lic.url}" if lic.url else ""))
    for cond in lic.conditions:
        c.print(f"                 - {cond}")
    if e.quality_note:
        c.print(f"  note           {e.quality_note}")
    c.print("  formats        " + ", ".join(f.id for f in fmts))
    for fam, b in builds.items():
        where = f"runs in {b['runtime_cpu']} on a CPU, {b['runtime_gpu']} on a GPU"
        state = "reference" if b["reference"] else ("builds" if b["buildable"] else f"no: {b['reason']}")
        c.print(f"  {fam:<14} {state}; {where}")


def _builds(entry) -> dict:
    """Per format family: whether edgekit can build it of this model (and why not), and the
    runtime that serves it per device kind."""
    from edgekit.formats import families

    out = {}
    for fam in families():
        fmts = fam.formats()
        if not fmts:
            continue
        f = fmts[0]
        why = "" if fam.is_reference else fam.unbuildable(f, entry)
        out[fam.name] = {
            "reference": fam.is_reference,
            "buildable": not fam.is_reference and not why,
            "reason": why or None,
            "runtime_cpu": f.runtime_for("cpu"),
            "runtime_gpu": f.runtime_for("gpu"),
        }
    return out
