"""The run's reports: report.json (every number), report.md (for people), pareto.png (size
against KLD with the bar and the pick). Each is written atomically."""

from __future__ import annotations

from edgekit import atomic
from edgekit.bench.quality import fmt_kld


def write_reports(report) -> None:
    run_dir = report.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    plot = write_plot(report, run_dir / "pareto.png")
    data["plot"] = "pareto.png" if plot else None
    if not plot:
        data["notes"].append(
            "pareto.png not written: matplotlib is not installed (pip install 'edgekit[plot]')"
        )
    atomic.write_json(run_dir / "report.json", data)
    atomic.write_text(run_dir / "report.md", markdown(report, data))


def markdown(report, data: dict) -> str:
    m, t, ref = data["model"], data["target"], data["reference"]
    lines = [
        f"# {m['name']} on {t['name']}",
        "",
        f"Quality bar: `{report.bar.text}`. Context planned: {report.ctx:,} tokens.",
        "",
        f"**Pick: {data['pick'] or 'none'}**"
        + (
            f" — `{data['pick_artifact']['path']}`, {data['pick_artifact']['size_bytes'] / 2**20:.1f} MiB"
            if data["pick_artifact"]
            else " — no candidate that fits meets the bar"
        ),
        "",
        f"Reference: {ref.get('reference')} ({ref.get('runtime')}), perplexity {ref['ppl']:.3f} on "
        f"{ref['positions']:,} scored positions ({ref.get('windows')} windows of {ref['window']} tokens, "
        f"second half scored); store keeps the reference tokens holding {ref.get('coverage')} of the mass "
        f"(mean {ref.get('kept_mean')} per position).",
        "",
        "| format | planned | on disk | bpw | KLD (mean ± se) | KLD p99 | same-top | PPL ratio | status "
        "| why |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.candidates:
        q, a = c.quality, c.artifact
        lines.append(
            f"| {c.format} | {c.planned_bytes / 2**20:.1f} MiB | "
            + (f"{a['size_bytes'] / 2**20:.1f} MiB | {a['bits_per_weight']:.2f} | " if a else "- | - | ")
            + (
                f"{fmt_kld(q.kld_mean)} ± {fmt_kld(q.kld_stderr)} | {q.kld_p99:.3f} | "
                f"{100 * q.same_top:.1f} % | "
                f"{q.ppl_ratio:.4f} ± {q.ppl_ratio_stderr:.4f} | "
                if q
                else "- | - | - | - | "
            )
            + f"{c.status} | {c.reason}{_decided(c)} |"
        )
    phases = data.get("phases") or {}
    if phases:
        lines += ["", "Where the time went:", "", "| phase | seconds | peak RSS |", "|---|---|---|"]
        lines += [
            f"| {k} | {v['seconds']:.1f} | {v['peak_rss_bytes'] / 2**20:.0f} MiB |" for k, v in phases.items()
        ]
    lines += ["", "Method:", ""]
    lines += [f"- {k}: {v}" for k, v in data["method"].items()]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in data["notes"]]
    lines += [
        "",
        "Tool versions: " + ", ".join(f"{k} {v}" for k, v in data["tool_versions"].items() if v),
        "",
    ]
    return "\n".join(lines)


def _decided(c) -> str:
    seq = c.sequential
    if not seq or not seq.get("decided"):
        return ""
    return f" (decided after {seq['after_windows']} of {seq['of_windows']} windows)"


def write_plot(report, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from edgekit.atomic import atomic_path

    pts = [
        (c.artifact["size_bytes"] / 2**20, c.quality.kld_mean, c.format, c.status)
        for c in report.candidates
        if c.quality and c.artifact
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for size, kld, name, status in pts:
        colour = {"pick": "tab:green", "below the bar": "tab:red"}.get(status, "tab:blue")
        ax.scatter(size, kld, color=colour, s=50 if status == "pick" else 25, zorder=3)
        ax.annotate(
            name.replace("gguf:", ""), (size, kld), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    if report.bar.metric == "kld":
        ax.axhline(report.bar.value, color="tab:gray", linestyle="--", label=f"bar: {report.bar.text}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("size on disk (MiB)")
    ax.set_ylabel("mean KL divergence vs reference (nats)")
    ax.set_title(f"{report.model['name']} on {report.target['name']}: measured frontier", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True
