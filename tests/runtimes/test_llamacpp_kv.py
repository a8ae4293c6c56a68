"""The planner's KV cache for llama.cpp against the cache llama.cpp allocates: tiny GGUFs of every
architecture edgekit converts, loaded by the llama.cpp runtime at a short and a long context
(past the sliding window where there is one), F16 and Q8_0 caches; llama.cpp's own account of
each cache (cells, layers, sequences, K and V sizes, from its log at allocation) against
`llamacpp.kv_caches` and the planner's row for the file (`edgekit plan FILE.gguf`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

MIB = 1024 * 1024
SHORT, LONG = 300, 5000  # 300 is padded to 512 cells; 5000 is past every tiny sliding window
ROUND = 0.005 + 1e-9  # llama.cpp prints each size to 0.01 MiB


def _tiny_llama(out: Path, tokenizer_dir: Path) -> Path:
    """A SmolLM-style Llama: 2 layers, 4 heads of 64, 2 KV heads, random weights."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(0)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cfg = LlamaConfig(
        vocab_size=640,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    return save_checkpoint(LlamaForCausalLM(cfg).eval(), tokenizer_dir, out)


def _mixtral(out: Path, tokenizer_dir: Path) -> Path:
    from tests.quantize.test_gguf_mixtral import build_tiny_mixtral

    return build_tiny_mixtral(out, tokenizer_dir, steps=0)


def _phi3(out: Path, tokenizer_dir: Path) -> Path:
    from tests.quantize.test_gguf_phi3 import build_phi3

    return build_phi3(out, tokenizer_dir)


def _phi3_window(out: Path, tokenizer_dir: Path) -> Path:
    """Phi-3 with a sliding window in its config (as Phi-3-mini-4k states 2047): llama.cpp
    disables it, so every layer caches the whole context."""
    import json

    path = _phi3(out, tokenizer_dir)
    cfg = json.loads((path / "config.json").read_text())
    cfg["sliding_window"] = 256
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def _gemma3(out: Path, tokenizer_dir: Path) -> Path:
    gemma3 = pytest.importorskip("tests.quantize.test_gguf_gemma3", reason="no Gemma 3 builder yet")
    return gemma3.build_gemma3(out, tokenizer_dir)


def _deepseek(out: Path, tokenizer_dir: Path) -> Path:
    deepseek = pytest.importorskip("tests.quantize.test_gguf_deepseek", reason="no DeepSeek builder yet")
    return deepseek.build_deepseek(out, tokenizer_dir)


BUILDERS = {
    "llama": _tiny_llama,
    "mixtral": _mixtral,
    "phi3": _phi3,
    "phi3-window": _phi3_window,
    "gemma3": _gemma3,
    "deepseek": _deepseek,
}
FIXTURES = {"qwen3": "tiny_qwen3", "qwen3_moe": "tiny_qwen3_moe"}
MODELS = list(FIXTURES) + list(BUILDERS)


@pytest.fixture(scope="module")
def tiny_gguf(request, tmp_path_factory, tiny_tokenizer):
    """name -> (checkpoint directory, F32 GGUF by edgekit's converter), built once."""
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            if name in FIXTURES:
                ck = Path(request.getfixturevalue(FIXTURES[name]))
            else:
                # not named after the model: llama.cpp gives a model named phi3 token
                # attributes this tokenizer lacks (tests/quantize/test_gguf_phi3.py)
                ck = BUILDERS[name](tmp_path_factory.mktemp(f"kv{len(cache)}-"), tiny_tokenizer)
            out = tmp_path_factory.mktemp("kv-gguf") / f"kv{len(cache)}-F32.gguf"
            convert(_local(ck, origin="local"), out, Recipe(mix="F32"))
            cache[name] = (ck, out)
        return cache[name]

    return get


def _planned_row(path: Path, ctx: int, kv_type: str):
    """The planner's llama.cpp row for the file, on the CPU (`edgekit plan FILE.gguf --target cpu`)."""
    from edgekit.formats import get_format
    from edgekit.models.catalogue import from_gguf
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target

    p = plan(from_gguf(path), get_target("cpu"), ctx=ctx, kv_type=kv_type, formats=[get_format("gguf:Q8_0")])
    (row,) = p.rows
    assert row.runtime == "llama.cpp" and row.kv_type == kv_type
    return row


CASES = [
    (SHORT, "f16", {}),
    (LONG, "f16", {}),
    (LONG, "q8_0", {}),  # a quantized V cache: flash attention on
    (SHORT, "f16", {"flash_attn": True}),  # flash attention alone changes no size
]


@pytest.mark.parametrize("ctx,kv_type,opts", CASES, ids=["short-f16", "long-f16", "long-q8_0", "short-fa"])
@pytest.mark.parametrize("name", MODELS)
def test_planned_kv_cache_is_what_llama_cpp_allocates(name, ctx, kv_type, opts, tiny_gguf, record_property):
    from edgekit.models.catalogue import from_gguf, from_local
    from edgekit.runtimes import llamacpp

    ck, path = tiny_gguf(name)
    arch = from_gguf(path).arch
    planned = llamacpp.kv_caches(arch, ctx, kv_type, options=llamacpp.Options(**opts))
    session = llamacpp.load(path, n_ctx=ctx, threads=2, device="cpu", kv_type=kv_type, **opts)
    try:
        actual = session.kv_caches
    finally:
        session.close()
    assert actual, "llama.cpp logged no KV cache"
    # the cache's shape exactly: cells per stream, layers, sequences, element types
    got = [(c.cells, c.layers, c.streams, c.k_type, c.v_type) for c in actual]
    assert got == [(c.cells, c.layers, c.streams, c.k_type, c.v_type) for c in planned]
    # and its bytes, to the 0.01 MiB llama.cpp prints them in
    for a, p in zip(actual, planned, strict=True):
        assert abs(a.k_mib - p.k_bytes / MIB) <= ROUND and abs(a.v_mib - p.v_bytes / MIB) <= ROUND
        assert abs(a.mib - p.nbytes / MIB) <= ROUND
    actual_bytes = sum(c.mib for c in actual) * MIB
    row = _planned_row(path, ctx, kv_type) if not opts else None
    plan_bytes = row.kv_bytes if row is not None else llamacpp.kv_cache_bytes(arch, ctx, kv_type)
    assert plan_bytes == sum(c.nbytes for c in planned)
    # the checkpoint's config.json plans the same cache as the file
    assert llamacpp.kv_cache_bytes(from_local(ck).arch, ctx, kv_type) == plan_bytes
    ratio = plan_bytes / actual_bytes
    record_property("planned_over_actual", ratio)
    print(
        f"{name} ctx {ctx} {kv_type} {opts}: planned {plan_bytes} B, "
        f"llama.cpp {actual_bytes:.0f} B, {ratio:.4f}"
    )
    assert abs(ratio - 1) <= 0.02


@pytest.mark.parametrize("ctx", [SHORT, LONG])
def test_swa_full_caches_the_whole_context(ctx, tiny_gguf):
    """-o swa_full=true: the sliding-window layers cache as many cells as the global ones."""
    from edgekit.models.catalogue import from_gguf
    from edgekit.runtimes import llamacpp

    _, path = tiny_gguf("gemma3")
    arch = from_gguf(path).arch
    opts = llamacpp.Options(swa_full=True)
    planned = llamacpp.kv_caches(arch, ctx, options=opts)
    session = llamacpp.load(path, n_ctx=ctx, threads=2, device="cpu", swa_full=True)
    try:
        actual = session.kv_caches
    finally:
        session.close()
    assert [(c.cells, c.layers) for c in actual] == [(c.cells, c.layers) for c in planned]
    assert len({c.cells for c in actual}) == 1
    for a, p in zip(actual, planned, strict=True):
        assert abs(a.mib - p.nbytes / MIB) <= ROUND
    window = llamacpp.kv_cache_bytes(arch, ctx)
    full = llamacpp.kv_cache_bytes(arch, ctx, options=opts)
    assert (full > window) == (ctx == LONG)


def test_kv_rule_without_llama_cpp():
    """The rule's arithmetic on catalogue models: padding, Gemma 3's window cache, MLA's one K row,
    Phi-3's ignored window; runtimes without a rule of their own keep Arch.kv_bytes."""
    from edgekit.models import get
    from edgekit.runtimes import llamacpp, registry

    g = get("gemma-3-27b").arch  # 62 layers, every 6th global, window 1024
    caches = llamacpp.kv_caches(g, 32768)
    assert [(c.cells, c.layers) for c in caches] == [(32768, 10), (1536, 52)]  # 1024 + 512 padded
    assert [(c.cells, c.layers) for c in llamacpp.kv_caches(g, 1000)] == [(1024, 10), (1024, 52)]
    ds = get("deepseek-r1").arch
    (c,) = llamacpp.kv_caches(ds, 4096, "q8_0")
    assert c.v_bytes == 0 and c.k_bytes == 61 * 4096 * (512 + 64) // 32 * 34
    q = get("qwen3-8b").arch
    assert llamacpp.kv_cache_bytes(q, 1000) == q.kv_bytes(1024)
    assert llamacpp.kv_cache_bytes(q, 1000, seqs=3) == 3 * q.kv_bytes(1024)
    assert registry.capabilities("vllm").kv_bytes(g, 32768, "f16") == int(g.kv_bytes(32768))
    assert registry.capabilities("llama.cpp").kv_bytes(g, 32768, "f16") == llamacpp.kv_cache_bytes(g, 32768)


def test_parse_kv_log():
    from edgekit.runtimes.llamacpp import parse_kv_log

    text = (
        "llama_kv_cache:        CPU KV buffer size =     2.00 MiB\n"
        "llama_kv_cache: size =    2.00 MiB (  4096 cells,   2 layers,  1/1 seqs), "
        "K (f16):    1.00 MiB, V (f16):    1.00 MiB\n"
        "llama_kv_cache: size =    0.56 MiB (   512 cells,   5 layers,  2/2 seqs), "
        "K (q8_0):    0.56 MiB, V (q8_0):    0.00 MiB\n"
    )
    a, b = parse_kv_log(text)
    assert (a.mib, a.cells, a.layers, a.seqs, a.streams, a.k_type, a.k_mib) == (
        2.0,
        4096,
        2,
        1,
        1,
        "f16",
        1.0,
    )
    assert (b.mib, b.cells, b.layers, b.streams, b.v_type, b.v_mib) == (0.56, 512, 5, 2, "q8_0", 0.0)
