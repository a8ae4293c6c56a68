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
    lines += auto_lines(data.get("auto") or {})
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


def side_by_side(auto: dict) -> list[tuple[str, ...]]:
    """The standard and the auto frontier side by side, smallest first: one row per candidate,
    its figures under its own kind's columns (size, format, KLD, pass/fail), the other's empty."""
    fr = auto.get("frontier") or {}
    rows = [(r, 0) for r in fr.get("standard", [])] + [(r, 1) for r in fr.get("auto", [])]
    rows.sort(key=lambda x: x[0]["size_bytes"] or x[0]["planned_bytes"])
    out = []
    for r, side in rows:
        size = r["size_bytes"] or r["planned_bytes"]
        size_text = _size(size) + ("" if r["size_bytes"] else " (plan)")
        kld = f"{fmt_kld(r['kld_mean'])} ± {fmt_kld(r['kld_stderr'])}" if r["kld_mean"] is not None else "-"
        verdict = {True: "pass", False: "fail", None: "-"}[r["passes"]]
        if r["status"] == "pick":
            verdict += " (pick)"
        cells = (r["format"], kld, verdict)
        empty = ("", "", "")
        out.append((size_text, *(cells + empty if side == 0 else empty + cells)))
    return out


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 10 * 2**20 else f"{n / 1024:.1f} KiB"


def auto_lines(auto: dict) -> list[str]:
    if not auto:
        return []
    summary = auto["summary"]
    lines = ["", f"**{summary[:1].upper()}{summary[1:]}.**"]
    rows = side_by_side(auto)
    if auto.get("rungs") and rows:
        lines += [
            "",
            "| size | standard | KLD | pass/fail | auto | KLD | pass/fail |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


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
        (c.artifact["size_bytes"] / 2**20, c.quality.kld_mean, c.format, c.status, c.kind)
        for c in report.candidates
        if c.quality and c.artifact
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for size, kld, name, status, kind in pts:
        colour = {"pick": "tab:green", "below the bar": "tab:red"}.get(status, "tab:blue")
        marker = "^" if kind == "auto" else "o"  # auto mixes as triangles
        ax.scatter(size, kld, color=colour, marker=marker, s=50 if status == "pick" else 25, zorder=3)
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
