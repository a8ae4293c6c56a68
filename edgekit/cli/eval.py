"""`edgekit eval`: score one artifact against the unquantized reference."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli import render


@click.command("eval")
@click.argument("artifact", type=click.Path())
@click.option(
    "--reference", required=True, help="The unquantized model (catalogue name, hub id or directory)."
)
@click.option(
    "--evaluation",
    type=click.Path(dir_okay=False),
    default=None,
    help="Held-out evaluation text [default: edgekit's own].",
)
@click.option(
    "--runtime",
    "-r",
    default=None,
    help="Score through this runtime [default: the one serving the format: llama.cpp for GGUF, transformers "
    "for checkpoints]; a server runtime (vllm) is scored on its top-K prompt log-probabilities.",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the runtime (repeatable); `edgekit runtimes` lists each runtime's options.",
)
@click.option(
    "--logprobs-k",
    type=int,
    default=256,
    show_default=True,
    help="--runtime vllm: top-K per position (alias of -o max_logprobs=K).",
)
@click.option(
    "--vllm-arg",
    "vllm_args",
    multiple=True,
    help="--runtime vllm: one more argument for `vllm serve` (alias of -o extra_args=ARG).",
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
@click.pass_context
def eval_cmd(ctx, artifact, reference, evaluation, runtime, options, logprobs_k, vllm_args, as_json) -> None:
    """KL divergence, same-top-token rate and perplexity of ARTIFACT against REFERENCE.

    ARTIFACT is a GGUF file, a checkpoint directory (BF16, GPTQ, AWQ, FP8 safetensors) or any
    artifact with an edgekit manifest whose format a registered runtime serves."""
    from edgekit.bench.reference import reference_store, score_with, scoring_runtime
    from edgekit.errors import EdgekitError
    from edgekit.models.source import open_checkpoint
    from edgekit.runtimes import options as runtime_options
    from edgekit.text import default_evaluation_text, read_text_file

    path = Path(artifact)
    if not path.exists():
        raise EdgekitError(f"{path}: no such file or directory")
    fmt = _format_of(path)
    if logprobs_k < 1:
        raise EdgekitError("--logprobs-k must be at least 1")
    # the runtime and its options are checked before the reference store is built: say at once
    # what is missing
    info = scoring_runtime(fmt, runtime)
    k_given = ctx.get_parameter_source("logprobs_k") != click.core.ParameterSource.DEFAULT
    aliases = {"max_logprobs": logprobs_k if k_given else None, "extra_args": list(vllm_args) or None}
    opts = runtime_options.build(info.options, options, aliases, runtime=info.name)
    text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
    ck = open_checkpoint(reference)
    with render.progress_bars(not as_json) as progress:
        store = reference_store(ck, text, progress=progress.windows)
        q = score_with(info, path, store, progress=progress.windows, options=opts)
    used = info.name
    d = {
        "artifact": str(path),
        "runtime": used,
        "reference": {**store.meta, "ppl": store.reference_ppl()},
        "quality": q.to_dict(),
    }
    if as_json:
        render.emit_json(d)
        return
    c = render.console()
    c.print(f"[bold]{path.name}[/bold] through {used} against {ck.entry.name} ({q.positions:,} positions)")
    c.print(
        f"  KLD        {q.kld_mean:.5f} ± {q.kld_stderr:.5f}  (p99 {q.kld_p99:.4f}, lower bound of the "
        "full KLD)"
    )
    c.print(f"  same-top   {100 * q.same_top:.2f}% ± {100 * q.same_top_stderr:.2f}%")
    c.print(
        f"  PPL        {q.ppl:.4f} ± {q.ppl_stderr:.4f} (reference {q.ppl_ref:.4f}, ratio "
        f"{q.ppl_ratio:.4f} ± {q.ppl_ratio_stderr:.4f})"
    )
    c.print(f"  speed      {q.tokens_per_s:,.0f} tokens scored per second")


def _format_of(path: Path) -> str:
    """The format id of ARTIFACT: its manifest's, else what its own files say (a bare GGUF
    file: "gguf"; a checkpoint directory: from its config.json)."""
    from edgekit.artifact import load_artifact, manifest_path
    from edgekit.bench.subject import checkpoint_format
    from edgekit.errors import EdgekitError
    from edgekit.gguf_io.reader import check_gguf

    if path.is_file():
        art = load_artifact(path)
        if art is not None:
            return str(art.format)
        check_gguf(path)
        return "gguf"
    mp = manifest_path(path)
    if mp.is_file():
        import json

        try:
            return str(json.loads(mp.read_text())["format"])
        except (ValueError, KeyError, TypeError) as e:
            raise EdgekitError(f"{mp}: malformed manifest ({e})") from None
    if not (path / "config.json").is_file():
        raise EdgekitError(f"{path}: not a GGUF file or a checkpoint directory (no config.json)")
    return checkpoint_format(path)
