"""edgekit's GGUF importer (models/gguf_import.py, wired into models/source.py): a GGUF file
back into a Hugging Face checkpoint, per architecture.

Round trip: edgekit's F32 GGUF of a tiny checkpoint, imported and converted back with
edgekit's converter, is the same file (tensors: names, shapes, types, bytes; every metadata
key but the descriptive ones). Quantized files import as BF16 and transformers' logits of the
import agree with llama.cpp's on the same file. The imported tokenizer encodes the evaluation
text as llama.cpp's tokenizer of the file does. Broken files fail in one line and leave
nothing in the cache; `edgekit quantize FILE.gguf` runs on the import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

# keys that describe the file, not the model: the converter names a checkpoint by its
# directory and its card (an import has neither the original's directory nor its card)
DESCRIPTIVE = {
    "general.name",
    "general.license",
    "general.source.url",
    "general.source.repo_url",
    "GGUF.kv_count",
}


def build_qwen2(out: Path, tokenizer_dir: Path) -> Path:
    """A tiny random-weight Qwen2 (q/k/v biases), untrained: a round trip needs no signal."""
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_models import save_checkpoint

    torch.manual_seed(0)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cfg = Qwen2Config(
        vocab_size=640,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=1e6,
        tie_word_embeddings=True,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    return save_checkpoint(Qwen2ForCausalLM(cfg).eval(), tokenizer_dir, out)


# DeepSeek-V3 (a multi-token-prediction layer the file leaves out), V2, V3 with its YaRN
DEEPSEEK = ("deepseek_v3", "deepseek_v2", "deepseek_v3_yarn")

# name -> conftest fixture or builder; no directory says "phi3" (llama.cpp then expects
# Phi-3's SentencePiece tokens in a file whose general.name names it)
CASES = ("qwen3", "qwen3_moe", "qwen2", "mixtral", "p3", "p3_longrope", "gemma3", *DEEPSEEK)


@pytest.fixture(scope="module")
def checkpoint(request, tmp_path_factory, tiny_tokenizer):
    """name -> a tiny checkpoint directory, built once per module."""
    from tests.quantize.test_gguf_deepseek import YARN, build_deepseek
    from tests.quantize.test_gguf_gemma3 import build_gemma3
    from tests.quantize.test_gguf_mixtral import build_tiny_mixtral
    from tests.quantize.test_gguf_phi3 import _long_rope, build_phi3

    builders = {
        "qwen3": lambda: request.getfixturevalue("tiny_qwen3"),
        "qwen3_moe": lambda: request.getfixturevalue("tiny_qwen3_moe"),
        "qwen2": lambda: build_qwen2(tmp_path_factory.mktemp("tiny-q2"), tiny_tokenizer),
        "mixtral": lambda: build_tiny_mixtral(tmp_path_factory.mktemp("tiny-mx"), tiny_tokenizer),
        "p3": lambda: build_phi3(tmp_path_factory.mktemp("tiny-p3"), tiny_tokenizer),
        "p3_longrope": lambda: build_phi3(
            tmp_path_factory.mktemp("tiny-p3-long"), tiny_tokenizer, rope_scaling=_long_rope()
        ),
        "gemma3": lambda: build_gemma3(tmp_path_factory.mktemp("tiny-g3"), tiny_tokenizer),
        "deepseek_v3": lambda: build_deepseek(tmp_path_factory.mktemp("tiny-ds3"), tiny_tokenizer),
        "deepseek_v2": lambda: build_deepseek(tmp_path_factory.mktemp("tiny-ds2"), tiny_tokenizer, version=2),
        "deepseek_v3_yarn": lambda: build_deepseek(
            tmp_path_factory.mktemp("tiny-ds3-yarn"), tiny_tokenizer, rope_parameters=YARN
        ),
    }
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = Path(builders[name]())
        return built[name]

    return get


@pytest.fixture(scope="module")
def gguf_of(checkpoint, tmp_path_factory):
    """(name, mix) -> edgekit's GGUF of the tiny checkpoint, written once per module."""
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    done: dict[tuple[str, str], Path] = {}

    def get(name: str, mix: str = "F32") -> Path:
        if (name, mix) not in done:
            out = tmp_path_factory.mktemp(f"gguf-{name}") / f"tiny-{name}-{mix}.gguf"
            convert(_local(checkpoint(name), origin="local"), out, Recipe(mix=mix))
            done[name, mix] = out
        return done[name, mix]

    return get


def _read(path: Path) -> tuple[dict, dict]:
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path)
    md = {
        k: (tuple(GGUFValueType(t).name for t in f.types), f.contents())
        for k, f in r.fields.items()
        if k not in DESCRIPTIVE
    }
    tensors = {
        t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), t.data.tobytes()) for t in r.tensors
    }
    return md, tensors


def _differences(a: Path, b: Path) -> list[str]:
    a_md, a_t = _read(a)
    b_md, b_t = _read(b)
    out = [
        f"tensor {n}: only in {'the original' if n in a_t else 'the round trip'}" for n in set(a_t) ^ set(b_t)
    ]
    for n in sorted(set(a_t) & set(b_t)):
        (ta, sa, xa), (tb, sb, xb) = a_t[n], b_t[n]
        if (ta, sa) != (tb, sb):
            out.append(f"tensor {n}: {ta}{list(sa)} became {tb}{list(sb)}")
        elif xa != xb:
            out.append(f"tensor {n}: bytes differ")
    for k in sorted(set(a_md) | set(b_md)):
        if a_md.get(k) != b_md.get(k):
            out.append(f"{k}: {str(a_md.get(k))[:120]} became {str(b_md.get(k))[:120]}")
    return out


def _meta(ck) -> dict:
    return json.loads((ck.path / "edgekit-import.json").read_text())


def _round_trip(src: Path, tmp_path: Path) -> tuple[object, list[str]]:
    """Import `src` (an F32 GGUF) through the model source, convert the import back to F32."""
    from edgekit.models.source import import_gguf
    from edgekit.quantize.gguf import Recipe, convert

    ck = import_gguf(src)
    back = tmp_path / "round-trip-F32.gguf"
    convert(ck, back, Recipe(mix="F32"))
    return ck, _differences(src, back)


@pytest.mark.parametrize("name", CASES)
def test_f32_import_converts_back_to_the_same_file(name, gguf_of, tmp_path):
    ck, diffs = _round_trip(gguf_of(name), tmp_path)
    meta = _meta(ck)
    assert meta["importer"] == "edgekit" and meta["dtype"] == "float32"
    assert meta["revision"].startswith("gguf-") and ck.revision == meta["revision"]
    assert not diffs, f"{name}: the round trip changed the file:\n" + "\n".join(diffs)


@pytest.mark.parametrize(("name", "mix"), [("qwen3", "F16"), ("gemma3", "F16"), ("mixtral", "BF16")])
def test_f16_and_bf16_imports_convert_back_to_the_same_file(name, mix, gguf_of, tmp_path):
    """Each tensor keeps its type: F16 / BF16 matrices, the F32 norms (Gemma's minus one)."""
    from safetensors import safe_open

    from edgekit.models.source import import_gguf
    from edgekit.quantize.gguf import Recipe, convert

    src = gguf_of(name, mix)
    ck = import_gguf(src)
    assert _meta(ck)["dtype"] == {"F16": "float16", "BF16": "bfloat16"}[mix]
    with safe_open(ck.path / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {mix, "F32"}
    back = tmp_path / f"round-trip-{mix}.gguf"
    convert(ck, back, Recipe(mix=mix))
    diffs = _differences(src, back)
    assert not diffs, f"{name} {mix}: the round trip changed the file:\n" + "\n".join(diffs)


@pytest.mark.slow
def test_smollm2_f32_import_converts_back_to_the_same_file(smollm2_checkpoint, tmp_path):
    """Llama: the q/k rows the converter reorders for llama.cpp's RoPE go back to HF's order
    (the embedded model, through edgekit's importer itself, converted to F32 and back)."""
    from edgekit.quantize.gguf import Recipe, convert

    assert _meta(smollm2_checkpoint)["importer"] == "edgekit"
    src = tmp_path / "smollm2-F32.gguf"
    convert(smollm2_checkpoint, src, Recipe(mix="F32"))
    ck, diffs = _round_trip(src, tmp_path)
    assert _meta(ck)["family"] == "llama"
    assert not diffs, "smollm2: the round trip changed the file:\n" + "\n".join(diffs)


@pytest.mark.parametrize("name", DEEPSEEK)
def test_deepseek_import_has_the_original_logits(name, checkpoint, gguf_of):
    """kv_b_proj merged back from attn_k_b (transposed per head) and attn_v_b, the shared
    experts, V3's routing bias, groups, scaling and YaRN in config.json: transformers' logits
    of the F32 import are the original checkpoint's; the MTP layer is not in the file."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.models.source import import_gguf

    ck = import_gguf(gguf_of(name))
    cfg = json.loads((ck.path / "config.json").read_text())
    original = json.loads((checkpoint(name) / "config.json").read_text())
    keys = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    keys += ("first_k_dense_replace", "n_routed_experts", "n_shared_experts", "moe_intermediate_size")
    keys += ("n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "scoring_func")
    assert {k: cfg[k] for k in keys} == {k: original[k] for k in keys}
    assert cfg["rope_parameters"] == original["rope_parameters"]
    if name != "deepseek_v2":
        assert original["num_nextn_predict_layers"] == 1 and cfg["num_nextn_predict_layers"] == 0
    ids = torch.randint(0, 600, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(checkpoint(name), dtype=torch.float32)(ids).logits
        model = AutoModelForCausalLM.from_pretrained(ck.path, dtype=torch.float32)
        assert type(model).__name__ == original["architectures"][0]
        got = model(ids).logits
    diff = (got - want).abs().max().item()
    print(f"{name}: max |logit diff| {diff:.2e} (logit std {want.std().item():.2f})")
    assert want.std().item() > 0.5 and diff <= 1e-5


def test_a_deepseek_v3_file_transformers_cannot_gate_is_refused_in_one_line(gguf_of, tmp_path):
    """transformers' DeepseekV3 always scores experts by sigmoid: a V3 file gating by softmax
    is refused before anything is written."""
    from gguf import GGUFValueType

    from edgekit.models.gguf_import import import_checkpoint, refusal

    path = _rewrite(
        gguf_of("deepseek_v3"),
        tmp_path / "tiny-ds3-softmax.gguf",
        add={"deepseek2.expert_gating_func": (1, GGUFValueType.UINT32)},
    )
    why = refusal(path) or ""
    assert "expert_gating_func" in why and "DeepseekV3ForCausalLM" in why and "\n" not in why
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgekitError, match="expert_gating_func"):
        import_checkpoint(path, out)
    assert list(out.iterdir()) == []


def _llama_cpp_ids(path: Path, text: str) -> list[int]:
    """llama.cpp's tokens of `text` as its loader reads the file (BOS where it adds one)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    finally:
        llm.close()


def _hf_ids(ck, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(ck.path)(text)["input_ids"])


@pytest.mark.parametrize("name", ["qwen3", "gemma3", "p3"])
def test_imported_tokenizer_encodes_like_llama_cpp(name, gguf_of):
    from edgekit.models.source import import_gguf
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text()
    path = gguf_of(name)
    ids = _llama_cpp_ids(path, text)
    assert len(ids) > 1000
    assert _hf_ids(import_gguf(path), text) == ids


def test_embedded_smollm2_tokenizer_encodes_like_llama_cpp(smollm2_checkpoint):
    from edgekit.models.source import import_gguf
    from edgekit.text import default_evaluation_text

    text = default_evaluation_text() + "\n<|im_start|>user\n12345 tokens, 67.8%<|im_end|>\n"
    src = Path(_meta(smollm2_checkpoint)["source"])
    ids = _llama_cpp_ids(src, text)
    assert _hf_ids(smollm2_checkpoint, text) == ids
    assert import_gguf(src).path == smollm2_checkpoint.path  # the cache entry, not a second import


def _rewrite(src: Path, dst: Path, drop=(), add=None, tensors=None) -> Path:
    """A copy of the F32 GGUF `src` without the keys `drop`, with the keys `add`
    ({key: (value, GGUFValueType)}) and the extra F32 tensors `tensors` ({name: array})."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in drop or k in (add or {}):
            continue
        vtype = GGUFValueType(f.types[0])
        sub = GGUFValueType(f.types[-1]) if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(k, f.contents(), vtype, sub_type=sub)
    for k, (value, vtype) in (add or {}).items():
        w.add_key_value(k, value, vtype)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data))
    for name, x in (tensors or {}).items():
        w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_a_bos_the_file_adds_is_added_by_the_imported_tokenizer(gguf_of, tmp_path):
    from gguf import GGUFValueType

    from edgekit.models.source import import_gguf
    from edgekit.text import default_evaluation_text

    bos = 1  # <|im_start|> of the tiny tokenizer
    path = _rewrite(
        gguf_of("qwen3"),
        tmp_path / "tiny-bos-F32.gguf",
        add={
            "tokenizer.ggml.add_bos_token": (True, GGUFValueType.BOOL),
            "tokenizer.ggml.bos_token_id": (bos, GGUFValueType.UINT32),
        },
    )
    text = default_evaluation_text()[:2000]
    ids = _llama_cpp_ids(path, text)
    assert ids[0] == bos and ids[1] != bos
    ck = import_gguf(path)
    assert _hf_ids(ck, text) == ids
    assert json.loads((ck.path / "tokenizer_config.json").read_text())["add_bos_token"] is True


# llama.cpp's logits of a quantized file against transformers' of its BF16 import
QUANTIZED = [
    ("qwen3", "Q8_0"),
    ("qwen3", "Q4_K_M"),
    ("qwen3_moe", "Q4_K_M"),
    ("mixtral", "Q4_K_M"),
    ("gemma3", "Q8_0"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mix"), QUANTIZED)
def test_a_quantized_file_imports_as_bf16_with_llama_cpp_logits(name, mix, gguf_of):
    from safetensors import safe_open

    from edgekit.models.source import import_gguf
    from tests.quantize.gguf_logits import logits_agree

    path = gguf_of(name, mix)
    ck = import_gguf(path)
    assert _meta(ck)["dtype"] == "bfloat16"
    with safe_open(ck.path / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    top1, max_diff, std = logits_agree(ck, path)
    # only the BF16 rounding of the dequantized weights (and llama.cpp's own arithmetic) apart:
    # the logits stay within a few percent of their spread; top-1 flips only at near ties,
    # and how many depends on the session's freshly trained fixture (qwen3 Q4_K_M measured
    # 97.9 % and 99.0 % top-1 on two builds, max diff 0.09 of a logit std of 2.8)
    assert top1 >= 0.97 and max_diff < 0.25 * std, (name, mix, top1, max_diff, std)


@pytest.mark.slow
def test_the_embedded_q4_1_model_imports_with_llama_cpp_logits(smollm2_checkpoint):
    from tests.quantize.gguf_logits import logits_agree

    src = Path(_meta(smollm2_checkpoint)["source"])
    top1, max_diff, std = logits_agree(smollm2_checkpoint, src, n_tokens=256)
    # 30 layers of llama.cpp's Q4_1 x Q8_1 dot products against float32 over the BF16 import
    # (the same weights, bit for bit, as transformers' own GGUF loader makes): 95.7 % top-1
    assert top1 >= 0.95 and max_diff < 0.25 * std, (top1, max_diff, std)


# ---- bad input ------------------------------------------------------------------------------


def _imports_dir() -> Path:
    from edgekit.paths import cache_dir

    return cache_dir() / "imports"


def _entries(stem: str) -> list[str]:
    d = _imports_dir()
    return sorted(p.name for p in d.iterdir() if stem in p.name) if d.is_dir() else []


def test_a_truncated_or_foreign_file_fails_in_one_line_and_leaves_nothing(gguf_of, tmp_path):
    from edgekit.models.source import open_checkpoint

    data = gguf_of("qwen3").read_bytes()
    cut = tmp_path / "tiny-cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgekitError) as ei:
        open_checkpoint(str(cut))
    assert "truncated GGUF" in ei.value.one_line() and "\n" not in ei.value.one_line()
    foreign = tmp_path / "tiny-foreign.gguf"
    foreign.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(EdgekitError, match="not a GGUF file"):
        open_checkpoint(str(foreign))
    assert _entries("tiny-cut") == [] and _entries("tiny-foreign") == []


def test_a_failure_half_way_leaves_no_partial_import(gguf_of, tmp_path):
    """No vocabulary: the weights are written before the tokenizer fails; nothing stays."""
    from edgekit.models.source import open_checkpoint

    path = _rewrite(gguf_of("qwen3"), tmp_path / "tiny-novocab.gguf", drop={"tokenizer.ggml.tokens"})
    with pytest.raises(EdgekitError, match="no tokenizer.ggml.tokens"):
        open_checkpoint(str(path))
    assert _entries("tiny-novocab") == []


def test_a_tensor_the_family_cannot_name_is_refused_before_anything_is_written(gguf_of, tmp_path):
    import numpy as np

    from edgekit.models.gguf_import import import_checkpoint, refusal

    path = _rewrite(
        gguf_of("qwen3"),
        tmp_path / "tiny-extra.gguf",
        tensors={"blk.0.mystery.weight": np.ones(8, np.float32)},
    )
    why = refusal(path)
    assert why is not None and "blk.0.mystery.weight has no checkpoint name for qwen3" in why
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgekitError, match="mystery"):
        import_checkpoint(path, out)
    assert list(out.iterdir()) == []
    assert refusal(gguf_of("qwen3")) is None


def test_files_edgekit_does_not_read_go_through_transformers_loader(gguf_of, tmp_path):
    """A tensor no family names: transformers' loader (which drops it) imports the file, and
    edgekit-import.json says why edgekit's did not; a SentencePiece vocabulary is refused
    by edgekit's importer (transformers' loader keeps it)."""
    import numpy as np
    from gguf import GGUFValueType

    from edgekit.models.gguf_import import refusal
    from edgekit.models.source import open_checkpoint

    path = _rewrite(
        gguf_of("qwen3"),
        tmp_path / "tiny-mystery.gguf",
        tensors={"blk.1.mystery.weight": np.ones(8, np.float32)},
    )
    meta = _meta(open_checkpoint(str(path)))
    assert meta["importer"] == "transformers" and meta["dtype"] == "bfloat16"
    assert "blk.1.mystery.weight has no checkpoint name" in meta["why_not_edgekit"]
    spm = _rewrite(
        gguf_of("qwen3"),
        tmp_path / "tiny-spm.gguf",
        add={"tokenizer.ggml.model": ("llama", GGUFValueType.STRING)},
    )
    assert "tokenizer of kind 'llama'" in (refusal(spm) or "")


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_quantize_of_a_gguf_file_builds_from_the_import(checkpoint, gguf_of, tmp_path):
    """`edgekit quantize FILE.gguf --format gguf:Q8_0`: from the F32 file's import, the same
    Q8_0 tensors as from the original checkpoint."""
    from click.testing import CliRunner

    from edgekit.cli.main import cli
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert
    from tests.quantize.gguf_util import tensors_of

    src = gguf_of("qwen3")
    args = ["quantize", str(src), "--format", "gguf:Q8_0", "--out", str(tmp_path / "out"), "--json"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["format"] == "gguf:Q8_0" and d["source"]["revision"].startswith("gguf-")
    direct = tmp_path / "direct-Q8_0.gguf"
    convert(_local(checkpoint("qwen3"), origin="local"), direct, Recipe(mix="Q8_0"))
    assert tensors_of(tmp_path / "out" / d["file"]) == tensors_of(direct)


def test_cli_quantize_of_a_truncated_gguf_is_one_line(gguf_of, tmp_path):
    import os
    import subprocess
    import sys

    data = gguf_of("qwen3").read_bytes()
    cut = tmp_path / "tiny-cli-cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()"]
    cmd += ["quantize", str(cut), "--format", "gguf:Q8_0", "--out", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 2 and "truncated GGUF" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists() and _entries("tiny-cli-cut") == []
