"""`edgekit quantize`: build a quantized artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli import render


@click.command("quantize")
@click.argument("model")
@click.option("--format", "fmt", required=True, help="gguf:Q4_K_M, gguf:Q8_0, ... (one format).")
@click.option("--imatrix", default="auto", show_default=True,
              help="auto (from the calibration text), none, or an imatrix GGUF file.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration text for the importance matrix [default: edgekit's own].")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="REGEX=TYPE",
              help="Force a ggml type on matching tensors (repeatable), as llama-quantize --tensor-type.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="artifacts", show_default=True)
@click.option("--threads", type=int, default=None, help="Quantization threads [default: all cores].")
@click.option("--force", is_flag=True, help="Rebuild even if an identical artifact exists.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def quantize_cmd(model, fmt, imatrix, calibration, tensor_types, out_dir, threads, force, as_json) -> None:
    """Quantize MODEL (catalogue name, hub id, local directory or .gguf) to one format."""
    from edgekit.errors import EdgekitError
    from edgekit.formats import get_format

    f = get_format(fmt)
    if f.family != "gguf":
        raise EdgekitError(f"{f.id}: only GGUF formats can be built in this version", "try --format gguf:Q4_K_M")
    from edgekit.quantize.gguf_build import build_gguf

    with _progress(not as_json) as progress:
        art = build_gguf(model, f.variant, Path(out_dir), imatrix=imatrix, calibration=calibration,
                         overrides=list(tensor_types), threads=threads, force=force, progress=progress)  # fmt: skip
    if as_json:
        d = art.to_dict()
        d.pop("tensors", None)
        render.emit_json(d)
        return
    m = art.manifest
    c = render.console()
    c.print(f"[bold]{art.path}[/bold]  {render.size(m['size_bytes'])}, {m['bits_per_weight']:.2f} bits per weight")
    c.print("  tensor types   " + ", ".join(f"{k} x{v}" for k, v in m["tensor_types"].items()))
    r = m["recipe"]
    c.print(f"  importance     {r['imatrix'] or 'none'}")
    if r.get("imatrix_summary") and r["imatrix_summary"].get("unseen_experts"):
        c.print(f"  [yellow]experts without calibration tokens:[/yellow] {r['imatrix_summary']['unseen_experts']}")
    c.print(f"  sha256         {m['sha256']}")
    c.print(f"  manifest       {art.path.name}.manifest.json")


class _progress:
    """Rich progress bars for the long steps, or silence."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        from edgekit.quantize.gguf_build import Progress

        if not self.enabled:
            return Progress()
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=render.console(), transient=False)  # fmt: skip
        self.bar.start()
        self.tasks = {}

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
        return Progress(stage=stage, tensor=lambda name, i, n: tensors(i, n), chunk=chunk)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
