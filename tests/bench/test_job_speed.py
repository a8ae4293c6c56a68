"""Speed and memory of a main-job candidate (edgekit.bench.job_speed): the speed bar, where the
target is, planned-only figures for another device, a real measurement of the default model's
Q4_K_M through `edgekit bench` (cached), and measured figures filled into a run's report."""

from __future__ import annotations

import json
import time

import pytest

from edgekit.bench import job_speed as js
from edgekit.bench import results_store
from edgekit.errors import EdgekitError
from tests.bench.bench_util import fake_run, smollm2_q4km

SETTINGS = js.SpeedSettings(prompt_tokens=128, gen_tokens=32, repeats=2, warmup=1, threads=2, ctx=512)


@pytest.fixture(autouse=True)
def _fixed_bandwidth(monkeypatch):
    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "20")  # no probe inside the tests


@pytest.fixture(scope="session")
def q4km(smollm2_checkpoint, tmp_path_factory):
    return smollm2_q4km(smollm2_checkpoint, tmp_path_factory)


def plan_row(target: str, ctx: int = 512, fmt: str = "gguf:Q4_K_M", prompt: int = 512) -> dict:
    from edgekit.formats import get_format
    from edgekit.models.catalogue import resolve
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target

    entry, tgt = resolve("smollm2-135m"), get_target(target)
    (row,) = plan(entry, tgt, ctx=ctx, formats=[get_format(fmt)], prompt_tokens=prompt).rows
    return row.to_dict()


def exact_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


# ---- the speed bar --------------------------------------------------------------------------


def test_parse_speed_bar():
    b = js.parse_speed_bar("decode>=40, prefill>200 tok/s,ttft<=500ms")
    assert [(c.metric, c.op, c.value) for c in b.clauses] == [
        ("decode", ">=", 40.0),
        ("prefill", ">", 200.0),
        ("ttft", "<=", 0.5),
    ]
    assert b.text == "decode>=40, prefill>200 tok/s, ttft<=500ms"
    assert js.parse_speed_bar("TTFT<=0.25s").clauses[0].value == 0.25
    assert exact_json(b.to_dict())["clauses"][2] == {
        "text": "ttft<=500ms",
        "metric": "ttft",
        "op": "<=",
        "value": 0.5,
        "unit": "s",
    }
    for bad, says in [
        ("", "empty"),
        (" , ", "empty"),
        ("decode>=", "malformed"),
        ("speed>=40", "malformed"),
        ("decode<=40", "lower bound"),
        ("ttft>=0.5", "upper bound"),
        ("ttft<=5 tok/s", "seconds"),
        ("decode>=40ms", "tokens per second"),
        ("decode>=0", "positive"),
        ("decode>=inf", "malformed"),
        ("decode>=40,decode>=50", "twice"),
        ("decode>=40,,ttft<=1", "malformed"),
    ]:
        with pytest.raises(EdgekitError) as e:
            js.parse_speed_bar(bad)
        line = e.value.one_line()
        assert says in line and "\n" not in line, (bad, line)


# ---- where the target is, and planned-only figures ------------------------------------------


def test_target_is_here(tmp_path, monkeypatch):
    from edgekit.bench import device as devmod

    assert js.target_is_here("cpu")
    gpus = devmod.detect().gpus
    assert js.target_is_here("rtx4090") == any(g.profile == "rtx4090" for g in gpus)
    assert not js.target_is_here("64xh100")
    # a CPU described by a TOML file is another machine
    tdir = tmp_path / "config" / "targets"
    tdir.mkdir(parents=True)
    (tdir / "pi5.toml").write_text('name = "pi5"\nkind = "cpu"\nmemory_gib = 8\nbandwidth_gbs = 17\n')
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path / "config"))
    assert not js.target_is_here("pi5")


def test_another_device_is_planned_only(tmp_path):
    row = plan_row("rtx4090")
    figs = js.candidate_speed(tmp_path / "never-read.gguf", "gguf:Q4_K_M", "rtx4090", row, SETTINGS)
    if figs.here:
        pytest.skip("this machine has an RTX 4090")
    d = exact_json(figs.to_dict())
    assert not d["measured"] and d["cache"] == "none" and d["measured_on"] is None
    assert all(d[n]["source"] == "planned" and d[n]["measured"] is None for n in js.FIGURES)
    assert d["decode_tok_s"]["value"] == row["decode_tok_s"]
    assert d["prefill_tok_s"]["value"] == row["prefill_tok_s"]
    assert d["peak_memory_bytes"]["value"] == row["per_device"]["total"]
    assert d["ttft_s"]["value"] == pytest.approx(128 / row["prefill_tok_s"], rel=1e-4)
    assert d["roofline_share"]["value"] is None and "measurement" in d["roofline_share"]["planned_basis"]
    (note,) = d["notes"]
    assert "edgekit bench" in note and "bench import" in note and "rtx4090" in note
    # a bar on planned figures is judged on them and says so
    bar = js.parse_speed_bar("decode>=40")
    assert bar.passes(figs) and "(planned)" in bar.reason(figs) and "not measured" in bar.reason(figs)
    assert bar.judged_on(figs) == {"decode": "planned"}
    assert not js.candidate_speed("x.gguf", "gguf:Q4_K_M", "cpu", row, SETTINGS, measure=False).measured


def test_fill_report_from_another_devices_store(tmp_path):
    if js.target_is_here("rtx4090"):
        pytest.skip("this machine has an RTX 4090")
    row = plan_row("rtx4090")
    sha = "ab" * 32
    store = tmp_path / "store"
    theirs = fake_run("r-4090", "box4090", "bbbb", 400.0, device="cuda")
    theirs["subject"]["sha256"] = sha
    other = fake_run("r-other", "laptop", "aaaa", 50.0)  # the same artifact on a CPU: not the target
    other["subject"]["sha256"] = sha
    bare = fake_run("r-bare", "box4090", "bbbb", 300.0, device="cuda")  # a GGUF benched without manifest
    for r in (theirs, other, bare):
        results_store._write(r, store)
    from edgekit.profiles.target import get_target

    planned = js.candidate_speed("x.gguf", "gguf:Q4_K_M", "rtx4090", row, SETTINGS)
    report = {
        "target": get_target("rtx4090").to_dict(),
        "pick": "gguf:Q4_K_M",
        "speed_bar": js.parse_speed_bar("decode>=500").to_dict(),
        "notes": [],
        "candidates": [
            {"format": "gguf:Q4_K_M", "artifact": {"sha256": sha}, "plan": row, "speed": planned.to_dict()},
            {"format": "gguf:Q8_0", "artifact": None, "plan": row, "speed": None},
            {
                "format": "gguf:Q4_K_S",
                "artifact": {"sha256": "cd" * 32, "path": "/here/smollm2-135m-Q4_K_M.gguf", "size_bytes": 1},
                "plan": row,
            },
            {"format": "gguf:Q6_K", "artifact": {"sha256": "ef" * 32}, "plan": row},
        ],
    }
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(json.dumps(report))
    # a re-run of the job finds the device's run in the store too (a bare file: its bytes' sha256)
    from edgekit.artifact import artifact_sha256

    art = tmp_path / "m.gguf"
    art.write_bytes(b"any bytes")
    mine = fake_run("r-4090-m", "box4090", "bbbb", 410.0, device="cuda")
    mine["subject"]["sha256"] = artifact_sha256(art)
    results_store._write(mine, store)
    got = js.candidate_speed(art, "gguf:Q4_K_M", "rtx4090", row, SETTINGS, store=store)
    assert got.cache == "store" and got.decode_tok_s.measured == 410.0 and not got.here
    assert got.settings["prompt_tokens"] == 512  # the run's own settings
    assert exact_json(got.to_dict())["decode_tok_s"]["source"] == "measured"
    out = js.fill_report(run_dir, store)
    assert out["filled"] == ["gguf:Q4_K_M", "gguf:Q4_K_S"] and out["problems"] == []
    assert out["not_measured_there"] == ["gguf:Q6_K"]
    d = json.loads((run_dir / "report.json").read_text())
    sp = d["candidates"][0]["speed"]
    assert (
        sp["measured"] and sp["decode_tok_s"]["source"] == "measured" and sp["decode_tok_s"]["value"] == 400.0
    )
    assert sp["decode_tok_s"]["planned"] == row["decode_tok_s"] and sp["measured_on"]["bench_run"] == "r-4090"
    assert sp["peak_memory_bytes"]["measured"] == 200 and sp["peak_memory_bytes"]["what"] == "peak VRAM"
    verdict = d["candidates"][0]["speed_bar"]
    assert not verdict["passes"] and "400.0 tok/s (measured) misses decode>=500" in verdict["reason"]
    assert any("misses the speed bar" in n for n in d["notes"])
    by_name = d["candidates"][2]["speed"]
    assert by_name["decode_tok_s"]["value"] == 300.0 and "file name and size" in by_name["notes"][-1]
    assert "speed" not in d["candidates"][3]
    with pytest.raises(EdgekitError, match="not a readable run report"):
        js.fill_report(tmp_path / "nowhere", store)


@pytest.mark.llamacpp
def test_a_damaged_cache_entry_is_never_used(tmp_path):
    import importlib.util

    from edgekit.bench import device as devmod

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python (the runtime that measures a GGUF)")

    art = tmp_path / "not-really.gguf"
    art.write_bytes(b"GGUF but not a real file")
    host = devmod.detect(nvml=False)
    entry, key, runtime = js.cache_entry(art, "gguf:Q4_K_M", "cpu", SETTINGS, host, tmp_path / "c")
    assert runtime == "llama.cpp" and key["host"] == host.fingerprint and key["settings"] == SETTINGS.key()
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"run": fake_run("r-cached", "here", host.fingerprint, 42.0)}))
    from edgekit import atomic

    atomic.seal(entry)
    args = (art, "gguf:Q4_K_M", "cpu", plan_row("cpu"), SETTINGS)
    hit = js.candidate_speed(*args, cache=tmp_path / "c")
    assert hit.cache == "hit" and hit.decode_tok_s.measured == 42.0 and hit.decode_tok_s.source == "measured"
    entry.write_text(entry.read_text().replace("42.0", "43.0"))  # damaged: measured again, here refused
    again = js.candidate_speed(*args, cache=tmp_path / "c")
    assert not again.measured and again.here and again.notes[0].startswith("not measured: ")
    assert "\n" not in again.notes[0]


# ---- measured on this machine ---------------------------------------------------------------


@pytest.mark.llamacpp
@pytest.mark.slow
def test_measured_figures_of_the_default_q4km_and_the_cache(q4km, tmp_path):
    row = plan_row("cpu")
    store, cache = tmp_path / "store", tmp_path / "speed-cache"
    t0 = time.perf_counter()
    figs = js.candidate_speed(q4km, "gguf:Q4_K_M", "cpu", row, SETTINGS, store=store, cache=cache)
    first_s = time.perf_counter() - t0
    d = exact_json(figs.to_dict())
    assert d["here"] and d["measured"] and d["cache"] == "miss", d["notes"]
    for n in js.FIGURES:
        f = d[n]
        assert f["source"] == "measured" and f["value"] == f["measured"] and f["value"] > 0, (n, f)
    assert d["decode_tok_s"]["min"] <= d["decode_tok_s"]["value"] <= d["decode_tok_s"]["max"]
    t, pre = d["ttft_s"], d["prefill_tok_s"]["value"]  # prefill = prompt / TTFT, per repeat
    assert 128 / t["max"] * 0.999 <= pre <= 128 / t["min"] * 1.001
    assert 0 < d["roofline_share"]["value"] < 2
    size = q4km.stat().st_size
    assert size // 2 < d["peak_memory_bytes"]["value"] < 8 * size
    assert d["peak_memory_bytes"]["what"] == "peak RSS" and d["peak_memory_bytes"]["measured_ctx"] == 512
    # the planned counterparts, from the plan row, beside them
    assert d["decode_tok_s"]["planned"] == row["decode_tok_s"]
    assert d["peak_memory_bytes"]["planned"] == row["per_device"]["total"]
    # the planner at the measurement's own context and prompt (prefill buffers grow with the prompt)
    at_bench = plan_row("cpu", prompt=SETTINGS.prompt_tokens)["per_device"]["total"]
    assert d["peak_memory_bytes"]["planned_at_measured_ctx"] == at_bench
    on = d["measured_on"]
    assert on["runtime"] == "llama.cpp" and on["device"] == "cpu" and d["settings"]["threads"] == 2
    runs, _ = results_store.load_runs(store)  # saved in the bench results store too
    assert [r["id"] for r in runs] == [on["bench_run"]]
    # from the cache: fast and the same figures
    t0 = time.perf_counter()
    again = js.candidate_speed(q4km, "gguf:Q4_K_M", "cpu", row, SETTINGS, store=store, cache=cache)
    hit_s = time.perf_counter() - t0
    assert again.cache == "hit" and hit_s < min(0.5, first_s / 4), (hit_s, first_s)
    d2 = exact_json(again.to_dict())
    assert {**d2, "cache": "miss"} == d and len(results_store.load_runs(store)[0]) == 1
    # the same run, read back from the store into a report of the cpu target
    from edgekit.artifact import load_artifact
    from edgekit.profiles.target import get_target

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sha = load_artifact(q4km).manifest.sha256
    cand = {"format": "gguf:Q4_K_M", "artifact": {"sha256": sha, "path": str(q4km)}, "plan": row}
    report = {"target": get_target("cpu").to_dict(), "pick": None, "candidates": [cand]}
    (run_dir / "report.json").write_text(json.dumps(report))
    assert js.fill_report(run_dir, store)["filled"] == ["gguf:Q4_K_M"]
    back = json.loads((run_dir / "report.json").read_text())["candidates"][0]["speed"]
    assert all(back[n]["measured"] == d[n]["measured"] for n in js.FIGURES)
    # a bar that cannot be met fails, with the observed value in the reason
    bar = js.parse_speed_bar("decode>=100000,ttft<=10")
    assert not bar.passes(figs)
    reason = bar.reason(figs)
    shown = f"{figs.decode_tok_s.measured:,.1f} tok/s (measured)"
    assert f"decode {shown} misses decode>=100000" in reason and "ttft" not in reason
    assert js.parse_speed_bar("decode>=0.01, prefill>=0.01, ttft<=1000").passes(figs)
    assert [r[2] for r in js.render_rows(figs)] == ["measured"] * 5 and "measured" in js.summary(figs)
    print("measured:", js.summary(figs), f"first {first_s:.1f} s, from cache {1000 * hit_s:.0f} ms")
