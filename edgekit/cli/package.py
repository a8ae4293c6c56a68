"""`edgekit package`: make an artifact behave like the official model in a runtime (Ollama)."""

from __future__ import annotations

import click

from edgekit.cli import render


@click.group("package")
def package() -> None:
    """Package an artifact for a runtime: `package ollama`, `package verify`."""


@package.command("ollama")
@click.argument("artifact")
@click.option("--name", required=True, metavar="NAME[:TAG]", help="Ollama model name, e.g. smollm2:q8.")
@click.option("--system", default=None, help="System prompt [default: the chat template's own, if any].")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    help="Ollama parameter (repeatable), e.g. --param num_ctx=8192; stop adds to the family's stops.",
)
@click.option(
    "--create",
    "do_create",
    is_flag=True,
    help="Create the model: the ollama binary, else a reachable $OLLAMA_HOST, else the store.",
)
@click.option("--host", default=None, metavar="URL", help="Create it on the Ollama server at URL.")
@click.option(
    "--store",
    default=None,
    metavar="DIR",
    help="Write it into this Ollama store directory ($OLLAMA_MODELS or ~/.ollama/models).",
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def ollama_cmd(artifact, name, system, params, do_create, host, store, as_json) -> None:
    """Write a Modelfile next to ARTIFACT (a GGUF) and, with --create/--host/--store, create the model.

    The Modelfile keeps the family's template (Qwen3: tools and the thinking toggle), its
    sampling defaults and stop tokens, and the license of the model it came from.
    """
    from edgekit.errors import EdgekitError
    from edgekit.package import ollama

    if sum(bool(x) for x in (do_create, host, store)) > 1:
        raise EdgekitError("give one of --create, --host URL, --store DIR")
    plan = ollama.plan_package(artifact, name, system=system, params=params)
    if not (do_create or host or store):
        path = ollama.write_modelfile(plan)
        if as_json:
            render.emit_json({**plan.to_dict(), "modelfile_text": plan.modelfile_text(), "created": None})
            return
        _show_plan(plan)
        c = render.console()
        c.print(f"  Modelfile      {path}")
        c.print(f"  create with    [bold]{plan.command}[/bold]  (or rerun with --create)")
        return
    method, where, notes = ollama.choose_method(host=host, store=store)
    result = ollama.create(plan, method, where, notes=notes)
    if as_json:
        render.emit_json({**plan.to_dict(), "created": result.to_dict()})
        return
    _show_plan(plan, warnings=False)
    _show_created(result)


def _show_plan(plan, warnings: bool = True) -> None:
    c = render.console()
    f = plan.facts
    c.print(
        f"[bold]{plan.name.short}[/bold]  from {plan.artifact.name}  "
        f"({f.architecture}, {f.model_type} parameters, {f.file_type})",
        highlight=False,
    )
    fam = plan.family
    c.print(
        f"  template       {fam.name if fam.template else 'none (the GGUF chat template)'}: {fam.reason}",
        highlight=False,
    )
    params = plan.modelfile.parameters_json()
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "none (Ollama's defaults)"
    c.print(f"  parameters     {shown}", highlight=False, markup=False)
    if plan.modelfile.system:
        first = plan.modelfile.system.splitlines()[0]
        c.print(f"  system         {first[:100]}", highlight=False, markup=False)
    lic = plan.license
    if lic:
        c.print(f"  license        {lic.name} ({lic.tier}), text from {lic.text_source}", highlight=False)
    if warnings:
        for w in plan.warnings:
            c.print(f"  [yellow]warning[/yellow]        {w}", highlight=False)


def _show_created(result) -> None:
    c = render.console()
    how = {"binary": "ollama create", "server": "the Ollama server", "store": "the Ollama store"}[
        result.method
    ]
    c.print(f"  created        [bold]{result.name}[/bold] with {how} at {result.where}", highlight=False)
    if result.modelfile:
        c.print(f"  Modelfile      {result.modelfile}", highlight=False)
    if result.manifest:
        c.print(f"  manifest       {result.manifest}", highlight=False)
    if result.layers:
        from rich.table import Table

        t = Table(show_edge=False, box=None, padding=(0, 2))
        for col in ("layer", "digest", "size", ""):
            t.add_column(col, justify="right" if col == "size" else "left")
        for layer in result.layers:
            t.add_row(
                layer["kind"],
                layer["digest"][:19],
                render.size(layer["size"]),
                "reused" if layer["reused"] else "new",
            )
        c.print(t)
    for w in result.warnings:
        c.print(f"  [yellow]warning[/yellow]        {w}", highlight=False)


@package.command("verify")
@click.argument("name")
@click.option(
    "--store", default=None, metavar="DIR", help="Ollama store [default: $OLLAMA_MODELS or ~/.ollama/models]."
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
@click.pass_context
def verify_cmd(ctx: click.Context, name, store, as_json) -> None:
    """Re-read NAME[:TAG] from an Ollama store and check every blob, the template and the stops."""
    from edgekit.package import ollama

    result = ollama.verify(name, store)
    if as_json:
        render.emit_json(result.to_dict())
    else:
        c = render.console()
        status = "[green]ok[/green]" if result.ok else f"[red]{len(result.problems)} problem(s)[/red]"
        c.print(f"[bold]{result.name}[/bold]  {result.manifest}  {status}", highlight=False)
        for check in result.checks:
            mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
            c.print(f"  {mark}  {check.name:<22} ", end="", highlight=False)
            c.print(check.detail, highlight=False, markup=False)
    if not result.ok:
        ctx.exit(1)
