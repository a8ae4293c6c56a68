"""`edgekit sweep`: the main job over models x targets x bars, serially or on Ray."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli import render


@click.command("sweep")
@click.argument("sweep_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--ray",
    "ray_address",
    default=None,
    envvar="RAY_ADDRESS",
    metavar="ADDRESS",
    help="Run each (model, target) job as a task on the Ray cluster at ADDRESS (HOST:PORT of the "
    "head, or auto) [default: $RAY_ADDRESS, else serially here]; needs the ray extra.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    help="Reports go to OUT/<sweep file's name>/: sweep.json, sweep.md, sweep.png and one "
    "<model>-<target>/<bar>/ per job and bar.",
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def sweep_cmd(sweep_file: str, ray_address: str | None, out_dir: str, as_json: bool) -> None:
    """Run the main job (`edgekit quantize MODEL --target T --bar B`) for every model, target
    and bar a sweep FILE (TOML) lists; see docs/sweep.md for the file.

    The file is checked whole before any work: a malformed file, an unknown model, target,
    format or bar, or a Ray address nothing answers at, is one line naming the entry (exit 2).
    Each model's reference store is built once, first; then its (model, target) jobs run one
    after the other, or with --ray as Ray tasks, retried on another worker if theirs dies
    (the cache makes a retry resume). The summary records where each job ran.
    """
    from edgekit.bench.sweep import JobResult, load_sweep, run_serial
    from edgekit.outputs import require_writable_dir

    spec = load_sweep(sweep_file)
    out = (Path(out_dir) / spec.name).absolute()
    require_writable_dir(out_dir)

    def line(r: JobResult) -> None:
        if as_json:
            return
        c = render.console()
        if r.error:
            c.print(f"[red]{r.model} on {r.target}: {r.error}[/red]")
        else:
            picks = ", ".join(f"{b.bar}: {b.pick or 'none'}" for b in r.bars)
            c.print(f"{r.model} on {r.target}: {picks} ({r.wall_s:.1f} s, {_where(r.ran_on)})")

    if ray_address:
        import contextlib
        import sys

        from edgekit.bench import sweep_ray

        # Ray's driver threads print retries and worker deaths to stdout: stderr keeps --json clean
        with contextlib.redirect_stdout(sys.stderr):
            cluster = sweep_ray.connect(ray_address)
            try:
                sweep_ray.check_placement(spec, out, cluster)
                report = sweep_ray.run_ray(spec, out, cluster, on_job=line)
            finally:
                sweep_ray.disconnect()
    else:
        with render.progress_bars(not as_json) as progress:
            report = run_serial(spec, out, progress, on_job=line)
    if as_json:
        import json

        render.emit_json(json.loads((out / "sweep.json").read_text()))
    else:
        render.console().print(
            f"sweep {spec.name}: {len(report.jobs)} job(s), {report.engine}, {report.wall_s:.1f} s; "
            f"summary: {out}/sweep.md, sweep.json"
        )
    if report.failed:
        raise click.exceptions.Exit(1)


def _where(p: dict) -> str:
    if p.get("engine") == "ray":
        return f"ray node {str(p.get('node_id'))[:8]}, worker {str(p.get('worker_id'))[:8]}"
    return f"here, pid {p.get('pid')}"
