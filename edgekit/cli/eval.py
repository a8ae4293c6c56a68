"""`edgekit eval`: score one artifact against the unquantized reference."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli import render


@click.command("eval")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--reference", required=True, help="The unquantized model (catalogue name, hub id or directory).")
@click.option("--evaluation", type=click.Path(dir_okay=False), default=None,
              help="Held-out evaluation text [default: edgekit's own].")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def eval_cmd(artifact, reference, evaluation, as_json) -> None:
    """KL divergence, same-top-token rate and perplexity of ARTIFACT (a GGUF) against REFERENCE."""
    from edgekit.bench.reference import reference_store, score_gguf
    from edgekit.models.source import open_checkpoint
    from edgekit.quantize.gguf_build import default_evaluation_text, read_text_file
    from edgekit.quantize.gguf_read import check_gguf

    path = Path(artifact)
    check_gguf(path)
    text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
    ck = open_checkpoint(reference)
    with render.progress_bars(not as_json) as progress:
        store = reference_store(ck, text, progress=progress.windows)
        q = score_gguf(path, store, progress=progress.windows)
    d = {"artifact": str(path), "reference": {**store.meta, "ppl": store.reference_ppl()}, "quality": q.to_dict()}
    if as_json:
        render.emit_json(d)
        return
    c = render.console()
    c.print(f"[bold]{path.name}[/bold] against {ck.entry.name} ({q.positions:,} positions)")
    c.print(f"  KLD        {q.kld_mean:.5f} ± {q.kld_stderr:.5f}  (p99 {q.kld_p99:.4f}, lower bound of the full KLD)")
    c.print(f"  same-top   {100 * q.same_top:.2f}% ± {100 * q.same_top_stderr:.2f}%")
    c.print(f"  PPL        {q.ppl:.4f} ± {q.ppl_stderr:.4f} (reference {q.ppl_ref:.4f}, ratio {q.ppl_ratio:.4f} ± {q.ppl_ratio_stderr:.4f})")
    c.print(f"  speed      {q.tokens_per_s:,.0f} tokens scored per second")
