"""A runtime's typed options from `-o key=value`: conversion by field type, repeatable tuples,
aliases from older flags, one-line errors naming the valid keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgekit.errors import EdgekitError
from edgekit.runtimes import options, registry
from edgekit.runtimes.base import Capabilities, NoOptions


@dataclass(frozen=True)
class Toy:
    level: int = 1
    share: float = 0.5
    fast: bool = False
    name: str | None = None
    extra: tuple[str, ...] = ()


def test_values_are_converted_by_field_type():
    o = options.build(Toy, ["level=3", "share=0.25", "fast=yes", "name=abc", "extra=--a", "extra=--b"])
    assert o == Toy(3, 0.25, True, "abc", ("--a", "--b"))
    assert options.build(Toy, ["name=none"]).name is None
    assert options.build(Toy, [], given={"level": 7, "name": None}) == Toy(level=7)
    kw = options.to_kwargs(o)
    assert kw["extra"] == ["--a", "--b"] and options.from_kwargs(Toy, kw) == o


def test_unknown_key_and_bad_values_are_one_line_errors():
    with pytest.raises(EdgekitError) as e:
        options.build(Toy, ["levle=3"], runtime="toy")
    line = e.value.one_line()
    assert "unknown option 'levle' for runtime toy" in line and "level, share, fast, name, extra" in line
    with pytest.raises(EdgekitError, match="not an integer"):
        options.build(Toy, ["level=x"])
    with pytest.raises(EdgekitError, match="true or false"):
        options.build(Toy, ["fast=maybe"])
    with pytest.raises(EdgekitError, match="key=value"):
        options.build(Toy, ["level"])
    with pytest.raises(EdgekitError, match="valid options: none"):
        options.build(NoOptions, ["a=1"], runtime="plain")


def test_builtin_runtimes_declare_options_and_capabilities():
    vllm = registry.find("vllm", check=False)
    assert vllm.server and "gpu_memory_utilization" in options.names(vllm.options)
    o = options.build(vllm.options, ["tensor_parallel_size=2", "extra_args=--enforce-eager"])
    assert o.tensor_parallel_size == 2 and o.extra_args == ("--enforce-eager",)
    lc = registry.find("llama.cpp", check=False)
    assert not lc.server and lc.caps.layer_split and lc.caps.host_embedding
    assert lc.caps.kv_type_for("fp8") == "q8_0" and "gpu_layers" in options.names(lc.options)
    assert registry.find("transformers", check=False).caps.kv_type_for("q8_0") == "f16"
    assert registry.find("onnxruntime", check=False).caps.kv_type_for("f16") == "f32"
    assert "options" in vllm.to_dict() and vllm.to_dict()["server"] is True


def test_malformed_capabilities_make_a_runtime_unavailable():
    class Mod:
        name, formats, devices, extra = "m", ("gguf",), ("cpu",), None
        Options = dict  # not a dataclass

    with pytest.raises(EdgekitError, match="not a dataclass"):
        Capabilities.of(Mod)
