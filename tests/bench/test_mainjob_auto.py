"""Auto rungs in the main job (issue 17 item 3): gguf:auto mixes fill the gap below the standard
pick, the pick is never larger than without them, the report says what it saves."""

import json

import pytest
from click.testing import CliRunner

from edgekit.bench.mainjob import rung_points
from edgekit.cli.main import cli


def test_rungs_sit_at_the_standard_sizes_below_the_pick_and_between_them():
    # Q2_K = Q3_K_S (one size), Q3_K_M below the pick at 6.0 bpw
    assert rung_points([5.46, 5.14, 5.14], 6.0) == pytest.approx([5.14, 5.30, 5.46, 5.73])
    assert rung_points([], 6.0) == []
    # a size (or a midpoint) within 1 % of the pick, or of a rung already placed, adds nothing
    assert rung_points([5.9, 5.97], 6.0) == [5.9]
    assert rung_points([4.0, 4.02], 5.0) == pytest.approx([4.0, 4.5])


def _run(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def runs(tiny_qwen3, tmp_path_factory):
    """Two standard types measured whole (--no-auto --full), a bar between their KLDs (so the
    standard search leaves a gap: the smaller misses, the larger passes), then the job with
    auto rungs and without them at that bar. A short evaluation text (6 windows) and no speed
    step keep it cheap; every run shares one output directory, so artifacts and complete scores
    are built once."""
    from edgekit.text import default_evaluation_text

    tmp = tmp_path_factory.mktemp("mainjob-auto")
    text = default_evaluation_text()
    ev = tmp / "eval.txt"
    ev.write_text(text[: len(text) // 5])
    out = tmp / "out"
    base = ["quantize", str(tiny_qwen3), "--target", "cpu", "--formats", "gguf:Q2_K,gguf:Q3_K_M"]
    base += ["--evaluation", str(ev), "--speed", "none", "--out", str(out), "--json"]
    full = json.loads(_run(*base, "--no-auto", "--full", "--bar", "kld<=1"))
    kld = {c["format"]: c["quality"]["kld_mean"] for c in full["candidates"]}
    assert kld["gguf:Q2_K"] > kld["gguf:Q3_K_M"], kld
    bar = f"kld<={(kld['gguf:Q2_K'] * kld['gguf:Q3_K_M']) ** 0.5:.6f}"
    auto = json.loads(_run(*base, "--bar", bar))
    md = next(out.iterdir()) / "report.md"
    auto_md = md.read_text()
    table = _run(*[a for a in base if a != "--json"], "--bar", bar)  # the people's output, from cache
    plain = json.loads(_run(*base, "--bar", bar, "--no-auto"))
    return {"auto": auto, "plain": plain, "md": auto_md, "table": table}


def _size(report):
    return report["pick_artifact"]["size_bytes"]


@pytest.mark.llamacpp
@pytest.mark.torch
def test_the_auto_pick_is_at_most_as_large_and_the_saving_is_reported(runs):
    auto, plain = runs["auto"], runs["plain"]
    assert plain["pick"] == "gguf:Q3_K_M" and auto["pick"]
    assert _size(auto) <= _size(plain)
    a = auto["auto"]
    assert a["enabled"] and a["standard_pick"] == "gguf:Q3_K_M"
    assert a["standard_pick_bytes"] == _size(plain) and a["pick_bytes"] == _size(auto)
    # two rungs at and above Q2_K's bits per weight (at it, midway to Q3_K_M's), bisected; below
    # it only when the rung at its size is the pick: the smallest mix and 1/3, 2/3 of the way up
    by = {c["format"]: c for c in auto["candidates"]}
    q2 = by["gguf:Q2_K"]["plan"]["bits_per_weight"]
    bpw = {r: float(r.removeprefix("gguf:auto@").removesuffix("bpw")) for r in a["rungs"]}
    upper = [r for r in a["rungs"] if bpw[r] >= q2 - 1e-4]
    lower = [r for r in a["rungs"] if bpw[r] < q2 - 1e-4]
    assert len(upper) == 2 and bpw[upper[0]] == pytest.approx(q2, abs=1e-4), a["rungs"]
    assert len(lower) in (0, 3) and bool(lower) == (
        upper[0] in a["measured"] and by[upper[0]]["quality"]["complete"]
    )
    assert 1 <= len([r for r in a["measured"] if r in upper]) <= 2
    assert len([r for r in a["measured"] if r in lower]) <= 2
    assert a["saving_bytes"] == _size(plain) - _size(auto)
    if a["pick_is_auto"]:
        assert a["saving_bytes"] > 0 and a["saving_pct"] == pytest.approx(
            100 * a["saving_bytes"] / _size(plain), abs=0.01
        )
        assert f"{a['saving_bytes']:,} bytes" in a["summary"] and "gguf:Q3_K_M" in a["summary"]
    else:
        assert a["saving_bytes"] == 0 and a["summary"].startswith("auto rungs did not beat gguf:Q3_K_M")
    # the frontier side by side: both standard types, both rungs, each with its verdict
    fr = a["frontier"]
    assert [r["format"] for r in fr["standard"]] == ["gguf:Q2_K", "gguf:Q3_K_M"]
    assert [r["passes"] for r in fr["standard"]] == [False, True]
    assert [r["format"] for r in fr["auto"]] == a["rungs"]
    assert all(r["passes"] is not None for r in fr["auto"] if r["format"] in a["measured"])
    assert {by[f]["kind"] for f in a["rungs"]} == {"auto"} and by["gguf:Q2_K"]["kind"] == "standard"
    assert by[auto["pick"]]["status"] == "pick" and by[auto["pick"]]["quality"]["complete"]
    assert all(c["reason"] for c in auto["candidates"])
    assert "| size | standard | KLD | pass/fail | auto | KLD | pass/fail |" in runs["md"]
    assert a["summary"][1:] in runs["md"]
    assert "standard and auto frontier" in runs["table"] and "pick:" in runs["table"]


@pytest.mark.llamacpp
@pytest.mark.torch
def test_no_auto_adds_no_auto_candidate(runs):
    plain = runs["plain"]
    assert {c["kind"] for c in plain["candidates"]} == {"standard"}
    assert not any(c["format"].startswith("gguf:auto@") for c in plain["candidates"])
    a = plain["auto"]
    assert a["enabled"] is False and a["rungs"] == [] and a["saving_bytes"] == 0
    assert a["summary"] == "auto rungs off (--no-auto)" and a["frontier"]["auto"] == []
