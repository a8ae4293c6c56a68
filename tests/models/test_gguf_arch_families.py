"""`edgekit plan FILE.gguf` for every architecture the converter writes: the Arch read from the
file's metadata and tensor table alone is the one the checkpoint's config.json gives (sizes,
parameter counts, KV bytes and the planner's tensor inventory), and `plan` / `models show`
take the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.models.test_gguf_arch import assert_same_model

pytestmark = [pytest.mark.torch, pytest.mark.llamacpp]


def _builders(tokenizer: Path) -> dict:
    from tests.quantize.test_gguf_gemma3 import build_gemma3
    from tests.quantize.test_gguf_mixtral import build_tiny_mixtral
    from tests.quantize.test_gguf_phi3 import _long_rope, build_phi3

    out = {
        "gemma3": lambda d: build_gemma3(d, tokenizer),
        "phi3": lambda d: build_phi3(d, tokenizer),
        "phi3_longrope": lambda d: build_phi3(d, tokenizer, rope_scaling=_long_rope()),
        "mixtral": lambda d: build_tiny_mixtral(d, tokenizer, steps=1),
    }
    try:
        from tests.quantize.test_gguf_deepseek import build_deepseek
    except ImportError:
        return out
    return out | {"deepseek": lambda d: build_deepseek(d, tokenizer)}


FAMILIES = ["gemma3", "phi3", "phi3_longrope", "mixtral", "deepseek"]


@pytest.mark.parametrize("name", FAMILIES)
def test_converted_gguf_plans_as_its_checkpoint(name, tiny_tokenizer, tmp_path):
    pytest.importorskip("transformers")
    from edgekit.models.catalogue import from_local
    from edgekit.models.gguf_arch import arch_from_gguf
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    builders = _builders(tiny_tokenizer)
    if name not in builders:
        pytest.skip(f"no {name} checkpoint builder yet")
    d = builders[name](tmp_path / name)
    out = tmp_path / f"{name}-Q8_0.gguf"
    convert(_local(d, origin="local"), out, Recipe(mix="Q8_0"))
    assert_same_model(arch_from_gguf(out), from_local(d).arch, out)
    r = run("plan", str(out), "--target", "cpu", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["model"]["source"] == f"gguf:{out}" and plan["rows"]
    s = run("models", "show", str(out), "--json")
    assert s.exit_code == 0 and json.loads(s.output)["gguf"]["file_type"] == "Q8_0"
