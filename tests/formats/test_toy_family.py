"""A format family added from outside edgekit: one class, one registration, no edit to edgekit.

The toy family is an uncompressed F16 safetensors checkpoint ("f16st:f16"), built by converting
the checkpoint's tensors and served by the transformers runtime. It must show up in `edgekit
formats`, in `edgekit plan`, in the main job's default ladder, and be built, scored and reported
by the main job like any built-in format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.formats import (
    ArtifactLines,
    BuildOptions,
    Format,
    FormatFamily,
    Support,
    TensorPlan,
    default_ladder,
    get_format,
    unregister,
)


def _run(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture
def toy_family():
    class F16Safetensors(FormatFamily, family="f16st"):
        description = "uncompressed F16 safetensors (a family defined by the test suite)"
        storage = "directory"

        def formats(self):
            return [Format("f16st:f16", self.name, "f16", "F16 safetensors", ("transformers",), "fp16")]

        def tensor_plan(self, fmt, arch):
            return [TensorPlan(t.name, t.role, t.shape, "f16", 2 * t.n_elements) for t in arch.tensors()]

        def support(self, fmt, device):
            return Support("native", "F16 everywhere")

        def ladder(self, device):
            return self.formats()

        def unbuildable(self, fmt, entry):
            return ""

        def build(self, checkpoint, fmt, out_dir: Path, opts: BuildOptions, progress=None):
            import torch
            from safetensors.torch import load_file, save_file

            from edgekit.artifact import (
                Manifest,
                artifact_sha256,
                artifact_size,
                describe_source,
                write_manifest,
            )

            dest = out_dir / f"{checkpoint.entry.name}-f16st"
            dest.mkdir(parents=True, exist_ok=True)
            for src in Path(checkpoint.path).iterdir():
                if src.suffix == ".safetensors":
                    tensors = {k: v.to(torch.float16) for k, v in load_file(src).items()}
                    save_file(tensors, dest / src.name, metadata={"format": "pt"})
                elif src.is_file():
                    shutil.copyfile(src, dest / src.name)
            cfg = json.loads((dest / "config.json").read_text())
            cfg["torch_dtype"] = cfg["dtype"] = "float16"
            (dest / "config.json").write_text(json.dumps(cfg))
            m = Manifest(
                format=fmt.id,
                file=dest.name,
                layout="safetensors",
                size_bytes=artifact_size(dest),
                sha256=artifact_sha256(dest),
                source=describe_source(checkpoint),
                recipe={"producer": "tests.formats.test_toy_family", "dtype": "float16"},
                bits_per_weight=16.0,
            )
            return write_manifest(dest, m)

        def describe(self, manifest):
            return ArtifactLines([("layout", "F16 safetensors"), ("sha256", manifest.sha256)])

    yield F16Safetensors
    unregister("f16st")


def test_a_registered_family_is_listed_parsed_and_planned(toy_family):
    fmt = get_format("F16ST:F16")
    assert fmt.id == "f16st:f16" and isinstance(fmt.impl, toy_family)
    listed = json.loads(_run("formats", "--json"))
    assert "f16st" in [f["family"] for f in listed["families"]]
    assert "f16st:f16" in _run("formats")
    plan = json.loads(_run("plan", "qwen3-8b", "--target", "h100", "--json"))
    row = next(r for r in plan["rows"] if r["format"] == "f16st:f16")
    bf16 = next(r for r in plan["rows"] if r["format"] == "bf16")
    assert row["weights_bytes"] == bf16["weights_bytes"] and row["runtime"] == "transformers"


def test_a_registered_family_joins_the_ladder(toy_family, monkeypatch):
    from edgekit.profiles.target import get_target

    monkeypatch.setenv("EDGEKIT_CPU_BANDWIDTH_GBS", "20")
    ids = [f.id for f in default_ladder(get_target("cpu").device)]
    assert "f16st:f16" in ids and "gguf:Q4_K_M" in ids


def test_unregistered_it_is_gone(toy_family):
    unregister("f16st")
    with pytest.raises(Exception, match="f16st"):
        get_format("f16st:f16")


@pytest.mark.torch
@pytest.mark.llamacpp
@pytest.mark.slow
def test_the_main_job_builds_scores_and_reports_it(toy_family, tiny_qwen3, tmp_path):
    out = _run(
        "quantize",
        str(tiny_qwen3),
        "--target",
        "cpu",
        "--formats",
        "f16st:f16",
        "--out",
        str(tmp_path),
        "--json",
    )
    d = json.loads(out)
    (cand,) = d["candidates"]
    assert cand["format"] == "f16st:f16" and cand["status"] == "pick", cand
    # F16 weights of a float32 model: a tiny but non-zero loss, scored in transformers
    assert 0 <= cand["quality"]["kld_mean"] < 1e-3 and cand["quality"]["same_top"] > 0.99
    assert d["reference"]["runtime_floor_kld"] is not None
    assert Path(cand["artifact"]["path"]).is_dir()


PLUGIN = """
from edgekit.formats.base import Format, FormatFamily, TensorPlan


class Plugged(FormatFamily, family="plugfmt"):
    description = "a family another package registers through its entry point"

    def formats(self):
        return [Format("plugfmt:w8", self.name, "w8", "8-bit plug", ("transformers",), "fp16", bits=8)]

    def tensor_plan(self, fmt, arch):
        return [TensorPlan(t.name, t.role, t.shape, "w8", t.n_elements) for t in arch.tensors()]
"""


def test_a_family_from_another_package_arrives_through_its_entry_point(tmp_path, monkeypatch):
    import importlib
    import sys

    from edgekit.plugins import import_group

    (tmp_path / "toy_fmt_plugin.py").write_text(PLUGIN)
    di = tmp_path / "toy_fmt_plugin-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-fmt-plugin\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text("[edgekit.formats]\nplugfmt = toy_fmt_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    import_group.cache_clear()
    try:
        assert get_format("plugfmt:w8").bits == 8
        assert "plugfmt:w8" in _run("formats")
    finally:
        unregister("plugfmt")
        sys.modules.pop("toy_fmt_plugin", None)
        import_group.cache_clear()
