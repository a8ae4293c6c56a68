"""`edgekit bench`: speed and memory of an artifact on this device, and the results store."""

from __future__ import annotations

import math

import click

from edgekit.cli import render


class _BenchGroup(click.Group):
    """`edgekit bench ARTIFACT ...` runs a benchmark (`edgekit bench run`); `report` and
    `import` are subcommands. A path that collides with one of those names: write ./report."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("bench", cls=_BenchGroup)
def bench_cmd() -> None:
    """Measure ARTIFACT|MODEL on this device (`edgekit bench ARTIFACT`), or show and merge stored results.

    \b
    edgekit bench ./artifacts/smollm2-135m-Q4_K_M.gguf --repeat 5
    edgekit bench smollm2-135m --runtime transformers      # the BF16 model
    edgekit bench report                                   # every device in the store, side by side
    edgekit bench import ~/from-the-h100/runs              # merge another machine's store
    """


@bench_cmd.command("run")
@click.argument("subject", metavar="ARTIFACT|MODEL")
@click.option(
    "--runtime", "-r", default=None, help="Runtime to measure through [default: the one serving the format]."
)
@click.option("--prompt-tokens", type=int, default=512, show_default=True, help="Prompt length in tokens.")
@click.option("--gen-tokens", type=int, default=128, show_default=True, help="Tokens generated per sequence.")
@click.option(
    "--batch", "batch", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,4,16."
)
@click.option(
    "--repeat", "repeats", type=int, default=3, show_default=True, help="Measured repeats per batch size."
)
@click.option("--warmup", type=int, default=1, show_default=True, help="Uncounted warmup generations.")
@click.option("--threads", type=int, default=None, help="CPU threads [default: all].")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where to run [default: the runtime's best].",
)
@click.option(
    "--ctx", "n_ctx", type=int, default=None, help="Context to allocate [default: prompt + gen tokens]."
)
@click.option("--label", default=None, help="Name of this device in the results store [default: host name].")
@click.option("--no-save", is_flag=True, help="Do not add the result to the results store.")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Results store directory.")
@click.option(
    "--target",
    "-t",
    "target",
    default=None,
    help="--runtime vllm: the GPUs to plan the layout for (8xh100); required with --dry-run.",
)
@click.option(
    "--format", "fmt", default="bf16", show_default=True, help="With --dry-run: the checkpoint format served."
)
@click.option(
    "--gpu-memory-utilization",
    type=float,
    default=0.90,
    show_default=True,
    help="--runtime vllm: share of each GPU.",
)
@click.option(
    "--tensor-parallel-size",
    "tp",
    type=int,
    default=None,
    help="--runtime vllm [default: from --target, else 1].",
)
@click.option("--expert-parallel", "ep", is_flag=True, help="--runtime vllm: --enable-expert-parallel (MoE).")
@click.option(
    "--quantization",
    default=None,
    help="--runtime vllm: vLLM's --quantization (e.g. fp8: online FP8 of a BF16 checkpoint).",
)
@click.option(
    "--vllm-arg",
    "vllm_args",
    multiple=True,
    help="--runtime vllm: one more argument for `vllm serve` (repeatable).",
)
@click.option(
    "--ray-address", default=None, help="--runtime vllm: run on an existing Ray cluster (host:port)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="--runtime vllm: print the layout, memory per GPU and commands; run nothing.",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the runtime (repeatable); `edgekit runtimes` lists each runtime's options.",
)
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
@click.pass_context
def run_cmd(
    ctx,
    subject,
    runtime,
    prompt_tokens,
    gen_tokens,
    batch,
    repeats,
    warmup,
    threads,
    device,
    n_ctx,
    label,
    no_save,
    store,
    target,
    fmt,
    gpu_memory_utilization,
    tp,
    ep,
    quantization,
    vllm_args,
    ray_address,
    dry_run,
    options,
    as_json,
) -> None:
    """Load time, TTFT, prefill and decode tok/s, peak memory and roofline share of ARTIFACT|MODEL.

    Through a server runtime (--runtime vllm) it is a serving benchmark: the server is started on
    loopback and --batch gives the concurrency levels (concurrent streamed requests, --repeat
    requests per client). Runtime options go in as -o KEY=VALUE; the vLLM flags below are
    aliases of its options."""
    from edgekit.bench.speed import Settings, bench, parse_batches

    if dry_run:
        return _vllm_dry_run(subject, runtime, target, fmt, n_ctx, gpu_memory_utilization, dry_run, as_json)
    if not no_save:  # before the benchmark, not after minutes of it
        from edgekit.bench.results_store import store_dir
        from edgekit.outputs import require_writable_dir

        require_writable_dir(store_dir(store), "--store")
    given = ctx.get_parameter_source("gpu_memory_utilization") != click.core.ParameterSource.DEFAULT
    aliases = {  # older flags, kept as aliases of the runtime's options (those it has)
        "gpu_memory_utilization": gpu_memory_utilization if given else None,
        "enable_expert_parallel": ep or None,
        "tensor_parallel_size": tp,
        "quantization": quantization,
        "extra_args": list(vllm_args) or None,
        "ray_address": ray_address,
    }

    settings = Settings(
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        batches=parse_batches(batch),
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        device=device,
        n_ctx=n_ctx,
    )
    c = render.console()

    def started(subj, info, log_path=None):
        if as_json:
            return
        from rich.markup import escape

        if info.server:
            c.print(
                f"[dim]starting {escape(info.reason)} for {escape(str(subj.path))} ({subj.format})"
                + (f"; log: {escape(str(log_path))}" if log_path else "")
                + "[/dim]"
            )
        else:
            c.print(
                f"[dim]measuring {escape(str(subj.path))} ({subj.format}) through {escape(info.name)} "
                f"in a child process: {warmup} warmup + {repeats} repeats...[/dim]"
            )

    def level(b):
        if not as_json:
            c.print(
                f"[dim]concurrency {b.batch}: {b.throughput['requests']} requests, "
                f"{render.rate(b.throughput['output_tok_s'])} output tok/s[/dim]"
            )

    result = bench(
        subject,
        runtime=runtime,
        settings=settings,
        label=label,
        save=not no_save,
        store=store,
        on_start=started,
        options=options,
        option_values=aliases,
        target=target,
        on_level=level,
    )
    if as_json:
        render.emit_json(result.to_dict())
        return
    print_result(result)


def _ms(stat) -> str:
    if not stat or stat.n == 0:
        return "-"
    return f"{1000 * stat.median:,.1f} ({1000 * stat.min:,.1f}-{1000 * stat.max:,.1f})"


def _rate(stat) -> str:
    if not stat or stat.n == 0:
        return "-"
    return f"{render.rate(stat.median)} ({render.rate(stat.min)}-{render.rate(stat.max)})"


def _pct(x) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, int | float) and math.isfinite(x) else "-"


def print_result(r) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = render.console()
    s, p = r.subject, r.planner
    c.print(
        f"[bold]{escape(s['path'])}[/bold]  {escape(s['format'])}, {render.size(s['size_bytes'])}"
        f"  on {escape(r.runtime['name'])} ({escape(str(r.runtime['version']))}), {r.device}"
    )
    h = r.host
    gpus = ", ".join(f"{g['name']} {g['memory_gib']:.0f} GiB CC {g['compute_capability']}" for g in h["gpus"])
    c.print(
        f"  device   {escape(h['label'])}: {escape(h['cpu']['model'])}, {h['cpu']['logical_cores']} threads, "
        f"{h['ram_gib']:.0f} GiB RAM; {escape(gpus or 'no GPU (' + h['gpu_note'] + ')')}"
    )
    st = r.settings
    c.print(
        f"  settings prompt {st['prompt_tokens']} tokens, generate {st['gen_tokens']}, ctx {st['n_ctx']}, "
        f"threads {st['threads_used']}, {st['repeats']} repeats after {st['warmup']} warmup"
    )
    mem = f"peak RSS {render.size(r.peak_rss_bytes)}"
    if r.peak_vram_bytes:
        mem += f", peak VRAM {render.size(r.peak_vram_bytes)}"
    c.print(f"  load     {r.load_s:.2f} s   {mem}")
    if p.get("predicted_peak_bytes"):
        c.print(
            f"  planner  {render.size(p['predicted_peak_bytes'])} predicted for {p['target']} "
            f"(weights {render.size(p['predicted_weights_bytes'])} + KV "
            f"{render.size(p['predicted_kv_bytes'])} + "
            f"overhead {render.size(p['predicted_overhead_bytes'])}) / {p['measured_what']} measured = "
            f"{p['predicted_over_measured']:.2f}"
        )
    elif p.get("reason"):
        c.print(f"  planner  {escape(p['reason'])}")
    if p.get("kv_tokens_vllm"):
        c.print(
            f"  KV cache vLLM allocated {p['kv_tokens_vllm']:,} tokens; the planner predicted "
            f"{p['kv_tokens_planned']:,} ({p['kv_tokens_planned_over_vllm']:.2f}x)"
        )
    serving = any(b.itl_s for b in r.batches)
    t = Table(title=None)
    cols = (
        ("concurrency", "TTFT ms", "ITL ms p50 / p99", "decode tok/s", "output tok/s", "roofline")
        if serving
        else ("batch", "TTFT ms", "prefill tok/s", "decode tok/s", "roofline")
    )
    for col in cols:
        t.add_column(col, justify="right")
    for b in r.batches:
        if not b.measured:
            t.add_row(str(b.batch), *["-"] * (len(cols) - 2), escape(f"not measured: {b.reason}"))
            continue
        roof = b.roofline or {}
        rl = (
            f"{_pct(roof['fraction'])} of {render.rate(roof['bound_tok_s'])} tok/s"
            if roof.get("fraction") is not None
            else escape(roof.get("reason", "-"))
        )
        if serving:
            itl = b.itl_s or {}
            itl_txt = f"{1000 * itl['p50']:,.1f} / {1000 * itl['p99']:,.1f}" if itl else "-"
            out = render.rate(b.throughput["output_tok_s"]) if b.throughput else "-"
            t.add_row(str(b.batch), _ms(b.ttft_s), itl_txt, _rate(b.decode_tok_s), out, rl)
        else:
            t.add_row(str(b.batch), _ms(b.ttft_s), _rate(b.prefill_tok_s), _rate(b.decode_tok_s), rl)
    c.print(t)
    c.print(
        "[dim]median (min-max) over "
        + ("requests; output tok/s = all generated tokens / wall time of the level" if serving else "repeats")
        + "; roofline = decode / (bandwidth / bytes read per token)"
        + (f", bandwidth {p['bandwidth_gbs']} GB/s" if p.get("bandwidth_gbs") else "")
        + "[/dim]"
    )
    for n in r.notes:
        c.print(f"[dim]{escape(n)}[/dim]")


@bench_cmd.command("report")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Results store directory.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def report_cmd(store, as_json) -> None:
    """Every stored result, devices side by side (decode tok/s median and roofline share)."""
    from edgekit.bench.results_store import compare, load_runs, store_dir

    runs, problems = load_runs(store)
    table = compare(runs)
    if as_json:
        render.emit_json({"store": str(store_dir(store)), "runs": len(runs), "problems": problems, **table})
        return
    from rich.markup import escape
    from rich.table import Table

    c = render.console()
    if not runs:
        c.print(f"no results in {store_dir(store)} yet: run `edgekit bench ARTIFACT`")
        return
    devs = table["devices"]
    t = Table(title=f"edgekit bench results ({len(runs)} runs, {store_dir(store)})")
    for col in ("model", "format", "runtime", "prompt/gen", "batch"):
        t.add_column(col)
    for label in devs.values():
        t.add_column(escape(label) + "\ndecode tok/s (roofline)", justify="right")
    for row in table["rows"]:
        cells = []
        for dev in devs:
            cell = row["devices"].get(dev)
            cells.append(
                ""
                if cell is None
                else f"{render.rate(cell['decode_tok_s'] or float('nan'))} "
                f"({_pct(cell['roofline_fraction'])})"
            )
        t.add_row(
            escape(str(row["model"])),
            escape(str(row["format"])),
            escape(row["runtime"]),
            f"{row['prompt_tokens']}/{row['gen_tokens']}",
            str(row["batch"]),
            *cells,
        )
    c.print(t)
    for p in problems:
        c.print(f"[yellow]skipped[/yellow] {escape(p)}")


@bench_cmd.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Results store directory.")
@click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
def import_cmd(sources, store, as_json) -> None:
    """Merge results from other machines (their store directories or run files) into this store."""
    from edgekit.bench.results_store import import_runs, store_dir
    from edgekit.outputs import require_writable_dir

    require_writable_dir(store_dir(store), "--store")
    out = import_runs(list(sources), store)
    if as_json:
        render.emit_json(out)
        return
    click.echo(f"{out['added']} runs added, {out['already_present']} already present ({out['store']})")
    for p in out["problems"]:
        click.echo(f"skipped {p}")


def _vllm_dry_run(model, runtime, target, fmt, ctx, util, dry_run, as_json) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.vllm_launch import launch_plan

    if runtime != "vllm":
        raise EdgekitError("--dry-run plans a vLLM launch", "add --runtime vllm")
    if not target:
        raise EdgekitError("--dry-run needs --target (e.g. 8xh100)")
    launch = launch_plan(model, target, fmt, ctx=ctx, gpu_memory_utilization=util)
    if as_json:
        render.emit_json(launch.to_dict())
        return
    c = render.console()
    lay = launch.layout
    g = launch.per_gpu
    c.print(
        f"[bold]{launch.model}[/bold] ({launch.format}) on {launch.target}: {lay['strategy']}, "
        f"TP {lay['tp']} x PP {lay['pp']}"
        + (f", EP {lay['ep']}" if lay["ep"] > 1 else "")
        + (f", {launch.nodes} nodes" if launch.nodes > 1 else "")
    )
    c.print(
        f"  per GPU: weights {render.gib(g['weights'])}, runtime {render.gib(g['non_kv_overhead'])}, "
        f"KV cache {render.gib(g['kv_budget'])} of {render.gib(g['usable'])} usable "
        f"({g['kv_tokens']:,} tokens, {g['concurrent_full_sequences']} full {launch.ctx:,}-token sequences)"
    )
    for r in launch.ray:
        c.print(f"  {r}", soft_wrap=True)
    import shlex

    c.print(f"  {shlex.join(launch.serve)}", soft_wrap=True, markup=False)
    for n in launch.notes:
        c.print(f"  note: {n}")
