"""report.json's `auto` block as the main job fills it (edgekit.bench.mainjob.auto_summary): the
saving when an auto mix is the pick, and each reason the rungs did not beat the standard pick."""

from __future__ import annotations

from edgekit.bench.mainjob import Candidate, auto_summary
from edgekit.bench.select import parse_bar
from tests.bench.bench_util import quality_result

BAR = parse_bar("kld<=0.03")


def _c(fmt: str, size: int, kld: float | None, kind: str = "standard") -> Candidate:
    c = Candidate(fmt, size, True, {}, kind=kind)
    c.artifact = {"path": f"/x/{fmt}.gguf", "size_bytes": size, "bits_per_weight": size * 8 / 134_515_008}
    c.quality = quality_result(kld) if kld is not None else None
    return c


def test_an_auto_pick_states_its_saving():
    std, auto = _c("gguf:Q5_K_S", 110_000_000, 0.006), _c("gguf:auto@4.5bpw", 88_000_000, 0.02, "auto")
    out = auto_summary(True, "", "", [std], [auto], std, auto, BAR, [auto])
    assert out["pick_is_auto"] and out["saving_bytes"] == 22_000_000 and out["saving_pct"] == 20.0
    assert "22,000,000 bytes (20.0 %) smaller than gguf:Q5_K_S" in out["summary"]
    assert out["standard_pick"] == "gguf:Q5_K_S" and out["measured"] == ["gguf:auto@4.5bpw"]


def test_rungs_that_miss_the_bar_are_named():
    std, auto = _c("gguf:Q5_K_S", 110_000_000, 0.006), _c("gguf:auto@4.5bpw", 88_000_000, 0.09, "auto")
    out = auto_summary(True, "", "", [std], [auto], std, std, BAR, [auto])
    assert out["saving_bytes"] == 0 and not out["pick_is_auto"]
    assert out["summary"] == "auto rungs did not beat gguf:Q5_K_S: gguf:auto@4.5bpw missed kld<=0.03"


def test_off_failed_and_no_gap_say_why():
    std = _c("gguf:Q4_K_M", 100_000_000, 0.02)
    off = auto_summary(False, "off (--no-auto)", "", [std], [], std, std, BAR, [])
    assert off["summary"] == "auto rungs off (--no-auto)" and off["enabled"] is False
    failed = auto_summary(True, "", "disk full", [std], [], std, std, BAR, [])
    assert failed["summary"].endswith("an auto build failed (disk full)") and failed["error"] == "disk full"
    gap = "no standard GGUF type of the ladder is smaller than gguf:Q4_K_M: no gap to fill"
    none = auto_summary(True, gap, "", [std], [], std, std, BAR, [])
    assert none["summary"] == f"auto rungs did not beat gguf:Q4_K_M: {gap}" and none["why_none"] == gap
    nothing = auto_summary(True, "no standard candidate meets the bar", "", [std], [], None, None, BAR, [])
    assert nothing["summary"].startswith("auto rungs did not run") and nothing["pick"] is None
