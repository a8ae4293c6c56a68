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
    help="Score through this runtime [default: llama.cpp for GGUF, transformers for checkpoints]; "
    "vllm scores vLLM's top-K prompt log-probabilities.",
)
@click.option(
    "--logprobs-k", type=int, default=256, show_default=True, help="--runtime vllm: top-K per position."
)
@click.option(
    "--vllm-arg", "vllm_args", multiple=True, help="--runtime vllm: one more argument for `vllm serve`."
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def eval_cmd(artifact, reference, evaluation, runtime, logprobs_k, vllm_args, as_json) -> None:
    """KL divergence, same-top-token rate and perplexity of ARTIFACT against REFERENCE.

    ARTIFACT is a GGUF file or a checkpoint directory (BF16, GPTQ, AWQ, FP8 safetensors)."""
    from edgekit.bench.reference import reference_store, score_checkpoint_dir, score_gguf, score_vllm
    from edgekit.errors import EdgekitError
    from edgekit.gguf_io.reader import check_gguf
    from edgekit.models.source import open_checkpoint
    from edgekit.text import default_evaluation_text, read_text_file

    path = Path(artifact)
    if not path.exists():
        raise EdgekitError(f"{path}: no such file or directory")
    if path.is_file():
        check_gguf(path)
        if runtime not in (None, "llama.cpp"):
            raise EdgekitError(f"--runtime {runtime} does not score GGUF files", "use --runtime llama.cpp")
    elif not (path / "config.json").is_file():
        raise EdgekitError(f"{path}: not a GGUF file or a checkpoint directory (no config.json)")
    elif runtime not in (None, "transformers", "vllm"):
        raise EdgekitError(
            f"--runtime {runtime} does not score checkpoint directories here", "use transformers or vllm"
        )
    if logprobs_k < 1:
        raise EdgekitError("--logprobs-k must be at least 1")
    if runtime == "vllm":  # before the reference store is built: say at once what is missing
        from edgekit.runtimes import registry

        registry.get("vllm")
    text = read_text_file(evaluation, "evaluation text") if evaluation else default_evaluation_text()
    ck = open_checkpoint(reference)
    with render.progress_bars(not as_json) as progress:
        store = reference_store(ck, text, progress=progress.windows)
        if path.is_file():
            q, used = score_gguf(path, store, progress=progress.windows), "llama.cpp"
        elif runtime == "vllm":
            q = score_vllm(path, store, k=logprobs_k, progress=progress.windows, extra_args=list(vllm_args))
            used = "vllm"
        else:
            q, used = score_checkpoint_dir(path, store, progress=progress.windows), "transformers"
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
        f"  KLD        {q.kld_mean:.5f} ± {q.kld_stderr:.5f}  (p99 {q.kld_p99:.4f}, lower bound of the full KLD)"
    )
    c.print(f"  same-top   {100 * q.same_top:.2f}% ± {100 * q.same_top_stderr:.2f}%")
    c.print(
        f"  PPL        {q.ppl:.4f} ± {q.ppl_stderr:.4f} (reference {q.ppl_ref:.4f}, ratio {q.ppl_ratio:.4f} ± {q.ppl_ratio_stderr:.4f})"
    )
    c.print(f"  speed      {q.tokens_per_s:,.0f} tokens scored per second")
