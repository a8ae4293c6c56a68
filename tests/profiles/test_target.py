import pytest

from edgekit.errors import ConfigError, EdgekitError, UnknownName
from edgekit.profiles.target import GIB, get_target, list_targets


def test_builtin_targets_match_anchors():
    t = get_target("rtx4090")
    assert t.device.bandwidth_bytes_s == 1008e9 and t.device.compute_capability == (8, 9)
    assert t.device.tflops["bf16"] == pytest.approx(165, rel=0.01) and t.device.tflops[
        "fp8"
    ] == pytest.approx(330, rel=0.01)
    h = get_target("h100")
    assert h.name == "h100-sxm" and h.device.bandwidth_bytes_s == 3350e9
    assert get_target("h100-pcie").device.bandwidth_bytes_s == 2000e9
    assert get_target("h200").device.bandwidth_bytes_s == 4800e9


def test_multi_gpu_forms():
    t = get_target("8xh100")
    assert t.count == 8 and t.name == "8xh100-sxm" and t.total_memory == 8 * t.device.memory_bytes
    assert t.to_dict()["interconnect"] == "nvlink4"
    t = get_target("2xRTX4090")
    assert t.count == 2 and t.to_dict()["interconnect"].startswith("pcie")


def test_cpu_is_detected(monkeypatch):
    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "42")
    t = get_target("cpu")
    assert t.device.kind == "cpu" and t.device.memory_bytes > GIB
    assert t.device.bandwidth_bytes_s == 42e9
    assert any("EDGEKIT_CPU_BANDWIDTH_GBS" in n for n in t.device.notes)
    with pytest.raises(EdgekitError):
        get_target("4xcpu")


def test_unknown_target_suggests():
    with pytest.raises(UnknownName) as ei:
        get_target("rtx4080")
    assert "rtx4090" in ei.value.one_line()


def test_user_target_file_is_picked_up(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path))
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "l40s.toml").write_text(
        'name = "l40s"\nkind = "gpu"\nmemory_gib = 44.5\nbandwidth_gbs = 864\ncompute_capability = "8.9"\n'
        "[tflops]\nbf16 = 362\nfp8 = 733\n"
    )
    t = get_target("2xl40s")
    assert t.device.memory_bytes == int(44.5 * GIB) and t.device.source.endswith("l40s.toml")
    assert "l40s" in {x.name for x in list_targets()}


@pytest.mark.parametrize(
    "body,key",
    [
        ('kind = "gpu"\nmemory_gib = 8\nbandwidth_gbs = 100\ncompute_capability = "8.6"', "name"),
        (
            'name = "x"\nkind = "gpu"\nmemory_gib = "lots"\nbandwidth_gbs = 100\ncompute_capability = "8.6"',
            "memory_gib",
        ),
        (
            'name = "x"\nkind = "gpu"\nmemory_gib = 8\nbandwidth_gbs = 100\ncompute_capability = "eight"',
            "compute_capability",
        ),
        ('name = "x"\nkind = "tpu"\nmemory_gib = 8\nbandwidth_gbs = 100', "kind"),
        ('name = "x"\nkind = "cpu"\nmemory_gib = 8\nbandwidth_gbs = -1', "bandwidth_gbs"),
        (
            'name = "x"\nkind = "cpu"\nmemory_gib = 8\nbandwidth_gbs = 9\n[tflops]\nfp32 = "fast"',
            "tflops.fp32",
        ),
        ('name = "x" kind', None),
    ],
)
def test_malformed_target_file_names_file_and_key(monkeypatch, tmp_path, body, key):
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path))
    (tmp_path / "targets").mkdir()
    f = tmp_path / "targets" / "bad.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as ei:
        get_target("rtx4090")
    assert ei.value.key == key and str(f) in ei.value.one_line()
