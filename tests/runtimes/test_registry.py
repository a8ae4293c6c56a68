"""The runtime registry: built-ins through the entry-point group, a third party's runtime added
by installing a distribution (no edit to edgekit), and every broken runtime reported, not raised."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from edgekit.errors import EdgekitError, UnknownName
from edgekit.runtimes import registry
from edgekit.runtimes.base import LOAD_OPTIONS, REQUIRED_ATTRIBUTES

GOOD = """
name = "toyengine"
formats = ("gguf", "fp8:dynamic")
devices = ("cpu",)
extra = None
install = "pip install toyengine"
description = "a toy"
def available():
    return True, "toyengine 1.2"
def load(path, n_ctx=2048, threads=None, device=None, scoring=None, **kw):
    raise NotImplementedError
"""
OFF = """
name = "offengine"
formats = ("bf16",)
devices = ("cpu", "cuda")
extra = "offextra"
def available():
    return False, "offlib is not installed"
def load(path, **options):
    raise AssertionError("never loaded")
"""


def install_fake_distribution(root, entries: dict[str, str], modules: dict[str, str]) -> None:
    """What `pip install` of a third-party package leaves on sys.path: modules + dist-info."""
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))
    di = root / "toy_runtimes-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-runtimes\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (di / "entry_points.txt").write_text(f"[edgekit.runtimes]\n{lines}\n")


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path,
        {
            "toyengine": "toy_good",
            "offengine": "toy_off",
            "broken": "toy_broken",
            "partial": "toy_partial",
            "raiser": "toy_raiser",
            "ghost": "toy_not_there",
        },
        {
            "toy_good": GOOD,
            "toy_off": OFF,
            "toy_broken": "raise RuntimeError('boom at import\\nsecond line')",
            "toy_partial": "name = 'partial'\nformats = ('gguf',)\n",
            "toy_raiser": GOOD.replace('"toyengine"', '"raiser"').replace(
                'return True, "toyengine 1.2"', "raise OSError('x')"
            ),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for m in ("toy_good", "toy_off", "toy_broken", "toy_partial", "toy_raiser"):
        sys.modules.pop(m, None)


def by_name(infos):
    return {i.name: i for i in infos}


def test_builtins_are_registered_and_llamacpp_meets_the_contract():
    infos = by_name(registry.discover())
    assert {"llama.cpp", "transformers", "onnxruntime"} <= set(infos)
    from edgekit.runtimes import llamacpp

    assert all(hasattr(llamacpp, a) for a in REQUIRED_ATTRIBUTES)
    import inspect

    params = inspect.signature(llamacpp.load).parameters
    assert all(o in params for o in LOAD_OPTIONS)
    lc = infos["llama.cpp"]
    assert lc.formats == ("gguf",) and "cpu" in lc.devices and lc.extra == "gguf"
    if lc.available:
        assert lc.version.startswith("llama-cpp-python")
    for i in infos.values():  # whatever state each is in: one line, and an install route when unavailable
        d = i.to_dict()
        assert "\n" not in (d["reason"] or "") and set(d) >= {
            "name",
            "available",
            "version",
            "formats",
            "devices",
            "reason",
            "extra",
            "install",
        }


def test_a_missing_module_is_unavailable_with_its_reason(monkeypatch):
    monkeypatch.setitem(registry.BUILTINS, "nothere", "edgekit.runtimes.nothere")
    info = registry.find("nothere")
    assert (
        not info.available and "not installed / not implemented" in info.reason and "nothere" in info.reason
    )


def test_third_party_runtime_is_found_through_the_entry_point(third_party):
    infos = by_name(registry.discover())
    toy = infos["toyengine"]
    assert toy.available and toy.version == "toyengine 1.2" and toy.origin == "entry-point"
    assert toy.serves("gguf:Q4_K_M") and toy.serves("fp8:dynamic") and not toy.serves("fp8:block128")
    off = infos["offengine"]
    assert not off.available and off.reason == "offlib is not installed"
    assert off.install_hint == 'install it with: pip install "edgekit[offextra]"'
    assert "fails to import" in infos["broken"].reason and "second line" not in infos["broken"].reason
    assert "missing: devices, extra, available, load" in infos["partial"].reason
    assert "available() failed" in infos["raiser"].reason and not infos["raiser"].available
    assert "not installed / not implemented" in infos["ghost"].reason
    assert registry.get("toyengine").module.name == "toyengine"


def test_lookup_errors(third_party):
    with pytest.raises(UnknownName) as e:
        registry.find("toyengin")
    assert "toyengine" in e.value.one_line()
    assert registry.find("LlamaCPP").name == "llama.cpp"  # spelling-insensitive
    with pytest.raises(registry.RuntimeUnavailable) as e:
        registry.get("offengine")
    line = e.value.one_line()
    assert "offengine is unavailable: offlib is not installed" in line and "edgekit[offextra]" in line


def test_for_format_prefers_the_planners_runtime(third_party):
    assert registry.for_format("gguf:Q4_K_M", "llama.cpp").name in ("llama.cpp", "toyengine")
    assert registry.for_format("gguf:Q4_K_M", "toyengine").name == "toyengine"
    assert registry.for_format("fp8:dynamic", "toyengine").name == "toyengine"
    with pytest.raises(EdgekitError, match="no registered runtime serves"):
        registry.for_format("nosuchfamily:x")


def test_serves_matches_family_or_exact_id():
    assert registry.serves(("gguf",), "gguf:Q8_0") and registry.serves(("bf16",), "BF16")
    assert not registry.serves(("gptq",), "awq:w4g128") and registry.serves(("awq:w4g128",), "awq:w4g128")
