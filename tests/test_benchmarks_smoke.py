"""benchmarks/time_to_pick.py without running either workflow: its reading of llama-perplexity's
KL statistics, the manual pick a user makes from the measured table, and its argument checks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the statistics block `llama-perplexity --kl-divergence` printed for SmolLM2 Q4_K_M (imatrix)
# on two windows of edgekit's evaluation text, trimmed to the lines the script reads and a few
# around them
KLD_LOG = """\
0.12.068.768 I Final estimate: PPL = 17.5724 +/- 2.18538
====== Perplexity statistics ======
Mean PPL(Q)                   :  17.572440 ±   2.185381
Mean PPL(base)                :  17.225677 ±   2.103196
Cor(ln(PPL(Q)), ln(PPL(base))):  99.52%
Mean ln(PPL(Q)/PPL(base))     :   0.019931 ±   0.012312
Mean PPL(Q)/PPL(base)         :   1.020131 ±   0.012560
Mean PPL(Q)-PPL(base)         :   0.346763 ±   0.226020

====== KL divergence statistics ======
Mean    KLD:   0.036707 ±   0.002507
Maximum KLD:   0.847806
99.9%   KLD:   0.680797
Median  KLD:   0.025628

====== Token probability statistics ======
Mean    Δp:  0.164 ± 0.221 %
RMS Δp    :  4.988 ± 0.611 %
Same top p: 89.412 ± 1.364 %
"""


@pytest.fixture(scope="module")
def ttp():
    spec = importlib.util.spec_from_file_location("time_to_pick", ROOT / "benchmarks" / "time_to_pick.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_reads_llama_perplexity_kl_statistics(ttp):
    s = ttp.parse_kld(KLD_LOG)
    assert s["kld"] == 0.036707 and s["kld_stderr"] == 0.002507
    assert s["ppl_ratio"] == 1.020131 and s["ppl_ratio_stderr"] == 0.012560
    assert s["same_top"] == pytest.approx(0.89412) and s["same_top_stderr"] == pytest.approx(0.01364)
    assert s["ppl"] == 17.572440  # PPL(Q), not PPL(base) or the ratio
    assert ttp.parse_final_ppl(KLD_LOG) == 17.5724
    with pytest.raises(ValueError, match="kld"):
        ttp.parse_kld("perplexity: calculating perplexity over 2 chunks\n")


def _row(ty, mib, kld, ppl_ratio=1.01, same_top=0.9):
    return {
        "type": ty,
        "size_bytes": int(mib * 2**20),
        "kld": kld,
        "ppl_ratio": ppl_ratio,
        "same_top": same_top,
    }


def test_manual_pick_is_the_smallest_file_that_meets_the_bar(ttp):
    # not monotone in size (Q5_K_S worse than Q4_K_M, as without an imatrix): a user looking at
    # the whole table still takes the smallest passing file
    rows = [
        _row("Q8_0", 138.1, 0.0039),
        _row("Q5_K_S", 105.0, 0.096),
        _row("Q4_K_M", 100.6, 0.029),
        _row("Q3_K_M", 90.0, 0.12),
        _row("Q2_K", 80.0, 0.4, ppl_ratio=1.2, same_top=0.6),
    ]
    assert ttp.manual_pick(rows, "kld<=0.03") == "Q4_K_M"
    assert ttp.manual_pick(rows, "kld<=0.01") == "Q8_0"
    assert ttp.manual_pick(rows, "kld<=0.001") is None
    assert ttp.manual_pick(rows, "kld<=0.029") == "Q4_K_M" and ttp.manual_pick(rows, "kld<0.029") == "Q8_0"
    rows[3] |= {"ppl_ratio": 1.02, "same_top": 0.95}
    assert ttp.manual_pick(rows, "ppl<=+3%") == "Q3_K_M"
    assert ttp.manual_pick(rows, "same_top>=0.95") == "Q3_K_M"
    assert ttp.normalize_type("gguf:Q4_K_M") == "Q4_K_M" and ttp.normalize_type(None) is None


def test_refuses_fewer_than_two_windows(ttp, capsys):
    with pytest.raises(SystemExit) as e:
        ttp.main(["--windows", "1"])
    assert e.value.code == 2
    assert "--windows must be at least 2" in capsys.readouterr().err
