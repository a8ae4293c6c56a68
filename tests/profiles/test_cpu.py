from edgekit.profiles import cpu


def test_cpu_facts_are_read():
    f = cpu.read_cpu_facts()
    assert f.logical_cores >= 1 and f.ram_bytes > 0 and f.fp32_flops_per_cycle() >= 8


def test_probe_measures_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("EDGEKIT_CPU_BANDWIDTH_GBS", raising=False)
    facts = cpu.read_cpu_facts()
    bw, how = cpu.bandwidth(facts)
    # any machine this runs on streams between 1 GB/s and 2 TB/s
    assert 1e9 < bw < 2e12 and "measured now" in how
    bw2, how2 = cpu.bandwidth(facts)
    assert bw2 == bw and "cached" in how2
