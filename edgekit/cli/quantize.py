"""`edgekit quantize`: build a quantized artifact."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli import render


@click.command("quantize")
@click.argument("model")
@click.option(
    "--target",
    "-t",
    "target",
    default=None,
    help="Pick the smallest format that fits TARGET and meets --bar.",
)
@click.option(
    "--format",
    "fmt",
    default=None,
    help="Build one format instead (gguf:Q4_K_M, gptq:w4g128, awq:w4g128, fp8:dynamic, fp8:block128, ...).",
)
@click.option(
    "--bar", default="kld<=0.03", show_default=True, help="Quality bar: kld<=X, ppl<=+N%, same_top>=X."
)
@click.option(
    "--formats",
    "formats_csv",
    default=None,
    help="Comma-separated candidate ladder [default: every family's ladder for the target: GGUF "
    "Q2_K..Q8_0; on GPU targets also GPTQ/AWQ/FP8 where native]; see `edgekit formats`.",
)
@click.option("--ctx", type=int, default=None, help="Context the pick must fit [default: min(model, 8192)].")
@click.option(
    "--evaluation",
    type=click.Path(dir_okay=False),
    default=None,
    help="Held-out evaluation text [default: edgekit's own].",
)
@click.option(
    "--imatrix",
    default="auto",
    show_default=True,
    help="auto (from the calibration text), none, or an imatrix GGUF file.",
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration text for the importance matrix / GPTQ / AWQ [default: edgekit's own].",
)
@click.option(
    "--samples", type=int, default=None, help="GPTQ/AWQ: at most this many 512-token calibration windows."
)
@click.option(
    "--tensor-type",
    "tensor_types",
    multiple=True,
    metavar="REGEX=TYPE",
    help="Force a ggml type on matching tensors (repeatable), as llama-quantize --tensor-type.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory [default: artifacts/ for --format, runs/ for --target].",
)
@click.option(
    "--score-runtime",
    default="transformers",
    show_default=True,
    help="--target: the runtime that scores every candidate it serves (GPTQ/AWQ/FP8: transformers, or "
    "vllm, the engine that serves them); the others are scored in their format's own runtime.",
)
@click.option(
    "--full",
    is_flag=True,
    help="--target: measure every fitting candidate on the whole evaluation text, the full frontier "
    "(default: search, stopping each candidate once the bar is settled; the pick is always scored on "
    "all of it).",
)
@click.option(
    "--speed",
    type=click.Choice(["pick", "all", "none"]),
    default="pick",
    show_default=True,
    help="--target: benchmark the pick (or every measured candidate) on this machine when it is the "
    "target; planned (roofline) figures otherwise.",
)
@click.option(
    "--speed-bar",
    default=None,
    help="--target: also require speed, e.g. 'decode>=40', 'prefill>=200', 'ttft<=0.5' (comma-joined): "
    "the pick is the smallest candidate meeting both bars.",
)
@click.option(
    "--auto/--no-auto",
    "auto",
    default=True,
    show_default=True,
    help="--target: add gguf:auto mixes as rungs at the sizes of the standard GGUF types below the "
    "standard pick and between them, so the pick can be an auto mix smaller than the smallest "
    "standard type that meets --bar (only where the ladder leaves a gap below its pick).",
)
@click.option("--threads", type=int, default=None, help="Quantization threads [default: all cores].")
@click.option("--force", is_flag=True, help="Rebuild even if an identical artifact exists.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def quantize_cmd(
    model,
    target,
    fmt,
    bar,
    formats_csv,
    ctx,
    evaluation,
    imatrix,
    calibration,
    samples,
    tensor_types,
    out_dir,
    score_runtime,
    full,
    speed,
    speed_bar,
    auto,
    threads,
    force,
    as_json,
) -> None:
    """Quantize MODEL (catalogue name, hub id, local directory or .gguf).

    With --target: plan what fits, measure candidates against the unquantized model, pick the
    smallest that meets --bar, and write report.json / report.md / pareto.png. With --format:
    build that one artifact.
    """
    from edgekit.bench.mainjob import JobOptions
    from edgekit.errors import EdgekitError
    from edgekit.formats import get_format
    from edgekit.outputs import require_writable_dir

    if target and not fmt:
        require_writable_dir(out_dir or "runs")
        formats = tuple(f.strip() for f in formats_csv.split(",") if f.strip()) if formats_csv else None
        job_opts = JobOptions(
            formats=formats or None,
            ctx=ctx,
            imatrix=imatrix,
            calibration=calibration,
            evaluation=evaluation,
            speed=speed,
            speed_bar=speed_bar,
            score_runtime=score_runtime,
            full=full,
            auto=auto,
        )
        return _main_job(model, target, bar, job_opts, out_dir, as_json)
    if not fmt:
        raise EdgekitError("say what to build", "give --target T to pick a format, or --format gguf:Q4_K_M")
    from edgekit.formats import BuildOptions, build
    from edgekit.models.source import open_checkpoint, peek_entry

    f = get_format(fmt)
    opts = BuildOptions(
        calibration=calibration,
        imatrix=imatrix,
        tensor_types=tuple(tensor_types),
        threads=threads,
        samples=samples,
        force=force,
    )
    f.impl.check_options(f, opts)
    entry = peek_entry(model)
    if entry is not None:  # refuse before any download, import or conversion
        f.impl.refuse_build(f, entry)
    require_writable_dir(out_dir or "artifacts")
    with render.progress_bars(not as_json) as progress:
        progress.say(f"resolving {model}")
        ck = open_checkpoint(model)
        art = build(ck, f, Path(out_dir or "artifacts"), opts, progress=progress)
    if as_json:
        d = art.to_dict()
        d.pop("tensors", None)
        render.emit_json(d)
        return
    m = art.manifest
    c = render.console()
    bpw = f", {m.bits_per_weight:.2f} bits per weight" if m.bits_per_weight else ""
    c.print(f"[bold]{art.path}[/bold]  {render.size(m.size_bytes)}{bpw}")
    lines = f.impl.describe(m)
    for label, text in lines.lines:
        c.print(f"  {label:<14} {text}")
    for w in lines.warnings:
        c.print(f"  [yellow]{w}[/yellow]")
    c.print(f"  {'manifest':<14} {art.path.name}.manifest.json")


def _main_job(model, target, bar, opts, out_dir, as_json) -> None:
    from edgekit.bench.mainjob import run_main_job

    with render.progress_bars(not as_json) as progress:
        report = run_main_job(
            model, target, bar, out_dir=Path(out_dir or "runs"), progress=progress, **opts.kwargs()
        )
    if as_json:
        render.emit_json(json.loads((report.run_dir / "report.json").read_text()))
        return
    from rich.table import Table

    from edgekit.bench.quality import fmt_kld

    c = render.console()
    t = Table(title=f"{report.model['name']} on {report.target['name']} — bar {report.bar.text}")
    for col in ("format", "size", "bpw", "KLD", "same-top", "PPL ratio", "status", "why"):
        t.add_column(
            col, justify="right" if col in ("size", "bpw", "KLD", "same-top", "PPL ratio") else "left"
        )
    for cand in report.candidates:
        q, a = cand.quality, cand.artifact
        colour = {"pick": "green", "below the bar": "red", "too big": "red", "too slow": "red"}.get(
            cand.status, "white"
        )
        t.add_row(
            cand.format,
            render.size(a["size_bytes"] if a else cand.planned_bytes) + ("" if a else " (plan)"),
            f"{a['bits_per_weight']:.2f}" if a else "-",
            f"{fmt_kld(q.kld_mean)}±{fmt_kld(q.kld_stderr)}" if q else "-",
            f"{100 * q.same_top:.1f}%" if q else "-",
            f"{q.ppl_ratio:.4f}" if q else "-",
            f"[{colour}]{cand.status}[/{colour}]",
            cand.reason,
        )
    c.print(t)
    if report.auto.get("rungs"):
        from edgekit.bench.report import side_by_side

        at = Table(title="standard and auto frontier")
        for col in ("size", "standard", "KLD", "pass/fail", "auto", "KLD ", "pass/fail "):
            at.add_column(col, justify="right" if col.startswith(("size", "KLD")) else "left")
        for row in side_by_side(report.auto):
            at.add_row(*row)
        c.print(at)
    if report.auto:
        colour = "green" if report.auto.get("pick_is_auto") else "white"
        c.print(f"[{colour}]{report.auto['summary']}[/{colour}]")
    if report.pick and report.pick.artifact:
        c.print(f"[bold green]pick:[/bold green] {report.pick.format} -> {report.pick.artifact['path']}")
    else:
        bars = report.bar.text + (f" and {report.speed_bar.text}" if report.speed_bar else "")
        c.print(f"[bold red]no candidate that fits meets {bars}[/bold red]")
    if report.pick and report.pick.speed is not None:
        from edgekit.bench.job_speed import render_rows

        st = Table(title=f"speed and memory of the pick on {report.target['name']}")
        for col in ("figure", "value", "source", "planned"):
            st.add_column(col, justify="left" if col in ("figure", "source") else "right")
        for row in render_rows(report.pick.speed):
            st.add_row(*row)
        c.print(st)
    for n in report.notes:
        c.print(f"  note: {n}")
    c.print(f"reports: {report.run_dir}/report.json, report.md, pareto.png")
