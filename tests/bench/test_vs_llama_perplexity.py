"""edgekit's store and scores against the real llama-perplexity on the same files and text:
the default model's F32 reference GGUF and its Q8_0, Q5_K_S and Q4_K_M (no importance matrix),
three windows of the evaluation text, 2 threads, flash attention off on both sides (edgekit's
llama.cpp default; llama-perplexity's own default, auto, turns it on for the CPU and moves
Q8_0's KLD by about 1 %)."""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch, pytest.mark.slow]

WINDOWS = 3
THREADS = 2
MIXES = ("Q8_0", "Q5_K_S", "Q4_K_M")


def _tool() -> tuple[Path, dict]:
    site = Path(sysconfig.get_paths()["purelib"])
    exe = site / "bin" / "llama-perplexity"
    if not exe.exists():
        pytest.skip(f"no llama-perplexity at {exe} (scripts/setup.sh builds it)")
    return exe, {**os.environ, "LD_LIBRARY_PATH": str(site / "lib")}


def _run(exe: Path, env: dict, *args: str) -> str:
    p = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout + p.stderr


def _figure(pattern: str, log: str) -> float:
    m = re.search(pattern, log)
    assert m, f"llama-perplexity printed no {pattern!r}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def both(smollm2_checkpoint, tmp_path_factory):
    """edgekit's store and scores, and llama-perplexity's figures, on the same files and text."""
    exe, env = _tool()
    from edgekit.bench.reference import reference_gguf, reference_store, score_gguf
    from edgekit.quantize.gguf_build import build_gguf
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text()[:9000]  # 3 windows of 512 tokens and a tail
    d = tmp_path_factory.mktemp("vs-llama-perplexity")
    text_file = d / "eval.txt"
    text_file.write_text(text, encoding="utf-8")
    ref = reference_gguf(smollm2_checkpoint)
    store = reference_store(smollm2_checkpoint, text)
    assert store.n_windows == WINDOWS
    common = ["-f", str(text_file), "-c", "512", "-t", str(THREADS), "-fa", "off"]
    base = d / "base.kld"
    log = _run(exe, env, "-m", str(ref), *common, "--kl-divergence-base", str(base))
    llama = {"ppl": _figure(r"Final estimate: PPL = ([\d.]+)", log)}
    ours = {}
    # the same directory as the bench tests' Q4_K_M (bench_util.smollm2_q4km): built once a session
    arts = tmp_path_factory.getbasetemp() / "bench-artifacts"
    for mix in MIXES:
        path = build_gguf(smollm2_checkpoint, mix, arts, imatrix="none").path
        log = _run(exe, env, "-m", str(path), *common, "--kl-divergence-base", str(base), "--kl-divergence")
        llama[mix] = {
            "kld": _figure(r"Mean\s+KLD:\s+([\d.]+)", log),
            "same_top": _figure(r"Same top p:\s+([\d.]+)", log) / 100,
            "ppl": _figure(r"Mean PPL\(Q\)\s+:\s+([\d.]+)", log),
        }
        ours[mix] = score_gguf(path, store, threads=THREADS)
    return store, ours, llama


def test_reference_perplexity_is_llama_perplexitys(both):
    store, _, llama = both
    ppl = store.reference_ppl()
    print(f"\nreference PPL: edgekit {ppl:.4f}, llama-perplexity {llama['ppl']:.4f}")
    assert store.positions == WINDOWS * 255  # rows 256..510 of every window, as llama-perplexity
    assert ppl == pytest.approx(llama["ppl"], rel=1e-3)


@pytest.mark.parametrize("mix", MIXES)
def test_kld_is_llama_perplexitys(both, mix, record_property):
    _, ours, llama = both
    q, want = ours[mix], llama[mix]
    rel = q.kld_mean / want["kld"] - 1
    record_property(f"{mix}_kld_rel", rel)
    print(
        f"\n{mix}: KLD edgekit {q.kld_mean:.6f}, llama-perplexity {want['kld']:.6f} ({100 * rel:+.2f} %); "
        f"same-top {q.same_top:.4f} / {want['same_top']:.4f}; PPL {q.ppl:.4f} / {want['ppl']:.4f}"
    )
    assert abs(rel) <= 0.005
    assert q.ppl == pytest.approx(want["ppl"], rel=1e-3)
    assert abs(q.same_top - want["same_top"]) <= 0.005  # one position in 765 is 0.0013
