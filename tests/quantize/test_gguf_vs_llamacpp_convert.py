"""edgekit's one-pass F32 GGUF against llama.cpp's own convert_hf_to_gguf.py (issue 14) on the
same checkpoint: the same tensors (names, shapes, types, bytes) and every metadata key llama.cpp's
converter writes equal in ours, type included, except the descriptive keys below; the keys only
edgekit writes are listed per case, and each says what llama.cpp derives anyway."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reference.llamacpp_convert import convert as reference_convert
from tests.reference.llamacpp_convert import converter_dir

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch, pytest.mark.slow]

# keys that describe the file, not the model: the two writers name and label it their own way
DESCRIPTIVE = {
    "general.name",  # llama.cpp: from the directory name; edgekit: the catalogue entry
    "general.basename",  # llama.cpp: from the directory name
    "general.finetune",  # llama.cpp: from the directory name
    "general.size_label",  # llama.cpp writes "1.5M" / "8x1.1M" (experts x expert size); edgekit "2M" / "4M"
    "general.license",  # spelling: the card's "apache-2.0" / "mit", edgekit's SPDX "Apache-2.0" / "MIT"
    "general.quantized_by",  # edgekit only
    "general.quantization_version",  # llama.cpp writes it on F32 files too; edgekit only when quantized
    "general.source.url",  # edgekit only, from the catalogue's hub id
    "general.source.repo_url",
    "GGUF.kv_count",  # follows from the keys
}


@dataclass(frozen=True)
class Case:
    checkpoint: str  # fixture name, or "build:<case>" for the builders below
    arch: str  # llama.cpp architecture name
    extra: tuple[str, ...]  # keys (after "<arch>.") only edgekit writes
    pre: str | None = "qwen2"  # the tiny tokenizer's split (tests/tiny_models.QWEN2_SPLIT)
    gpt2_vocab: bool = False


CASES = {
    "qwen3": Case("tiny_qwen3", "qwen3", ("vocab_size",)),
    "qwen3_moe": Case("tiny_qwen3_moe", "qwen3moe", ("vocab_size",)),
    "mixtral": Case(
        "build:mixtral",
        "llama",
        ("attention.key_length", "attention.value_length", "expert_feed_forward_length"),
    ),
    "phi3": Case(
        "build:phi3",
        "phi3",
        ("attention.key_length", "attention.value_length", "vocab_size"),
        gpt2_vocab=True,
    ),
    "phi3_longrope": Case(
        "build:phi3_longrope",
        "phi3",
        ("attention.key_length", "attention.value_length", "vocab_size"),
        gpt2_vocab=True,
    ),
    # llama.cpp's Gemma 3 class takes the GPT-2 BPE path itself when there is no tokenizer.model
    "gemma3": Case("build:gemma3", "gemma3", ("vocab_size",)),
    "deepseek_v3": Case("build:deepseek_v3", "deepseek2", ()),
    "deepseek_v2": Case("build:deepseek_v2", "deepseek2", ()),
    "deepseek_v3_yarn": Case("build:deepseek_v3_yarn", "deepseek2", ()),
    "deepseek_v2_lite": Case("build:deepseek_v2_lite", "deepseek2", ()),
    # the checkpoint edgekit imports from the embedded SmolLM2 GGUF: transformers' import
    # writes its tokenizer.json with byte_fallback, which llama.cpp's Llama class would take
    # for a Llama-2 SentencePiece-style vocabulary; the real SmolLM2 tokenizer.json takes the
    # GPT-2 BPE path, as here (its pre-tokenizer hash is known to llama.cpp: no override)
    "smollm2": Case("smollm2_checkpoint", "llama", (), pre=None, gpt2_vocab=True),
}


def _what_llama_cpp_derives(key: str, ref: dict) -> object:
    """The value llama.cpp uses for a key only edgekit writes (read from the reference file)."""
    arch = ref["general.architecture"][1]
    suffix = key[len(arch) + 1 :]
    if suffix in ("attention.key_length", "attention.value_length"):
        return ref[f"{arch}.embedding_length"][1] // ref[f"{arch}.attention.head_count"][1]
    if suffix == "vocab_size":
        return len(ref["tokenizer.ggml.tokens"][1])
    if suffix == "expert_feed_forward_length":  # the LLAMA graph sizes experts by it
        return ref[f"{arch}.feed_forward_length"][1]
    raise AssertionError(f"no rule for {key}")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_tokenizer):
    from tests.quantize.test_gguf_deepseek import VARIANTS, build_deepseek
    from tests.quantize.test_gguf_gemma3 import build_gemma3
    from tests.quantize.test_gguf_mixtral import build_tiny_mixtral
    from tests.quantize.test_gguf_phi3 import _long_rope, build_phi3

    builders = {
        "mixtral": lambda out: build_tiny_mixtral(out, tiny_tokenizer),
        "phi3": lambda out: build_phi3(out, tiny_tokenizer),
        "phi3_longrope": lambda out: build_phi3(out, tiny_tokenizer, rope_scaling=_long_rope()),
        "gemma3": lambda out: build_gemma3(out, tiny_tokenizer),
        "deepseek_v3": lambda out: build_deepseek(out, tiny_tokenizer, version=3),
        "deepseek_v2": lambda out: build_deepseek(out, tiny_tokenizer, version=2),
        "deepseek_v3_yarn": lambda out: build_deepseek(out, tiny_tokenizer, **VARIANTS["v3-yarn"]),
        "deepseek_v2_lite": lambda out: build_deepseek(out, tiny_tokenizer, **VARIANTS["v2-lite"]),
    }
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = builders[name](tmp_path_factory.mktemp(f"ref-{name}"))
        return cache[name]

    return get


def _read(path: Path):
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path)
    md = {
        k: (tuple(GGUFValueType(t).name for t in f.types), f.contents())
        for k, f in r.fields.items()
        if k not in DESCRIPTIVE
    }
    return md, {t.name: t for t in r.tensors}


def _short(v) -> str:
    s = repr(v)
    return s if len(s) < 160 else s[:160] + "..."


def _differences(ours: Path, ref: Path, case: Case) -> list[str]:
    import numpy as np

    a_md, a_t = _read(ours)
    b_md, b_t = _read(ref)
    out = []
    for name in sorted(set(a_t) ^ set(b_t)):
        out.append(f"tensor {name}: only in {'ours' if name in a_t else 'llama.cpp'}")
    # the order of the tensors is not compared: llama.cpp's loader finds them by name
    for name in sorted(set(a_t) & set(b_t)):
        x, y = a_t[name], b_t[name]
        if tuple(x.shape) != tuple(y.shape) or x.tensor_type != y.tensor_type:
            out.append(
                f"tensor {name}: ours {x.tensor_type.name}{list(x.shape)}, "
                f"llama.cpp {y.tensor_type.name}{list(y.shape)}"
            )
        elif x.data.tobytes() != y.data.tobytes():
            diff = np.abs(np.asarray(x.data, np.float64) - np.asarray(y.data, np.float64))
            out.append(
                f"tensor {name}: bytes differ ({int((diff > 0).sum())} values, max |diff| {diff.max():.3g})"
            )
    extra = {f"{case.arch}.{k}" for k in case.extra}
    for key in sorted(set(b_md)):
        if key not in a_md:
            out.append(f"{key}: missing in ours (llama.cpp {_short(b_md[key])})")
        elif a_md[key] != b_md[key]:
            out.append(f"{key}: ours {_short(a_md[key])}, llama.cpp {_short(b_md[key])}")
    for key in sorted(set(a_md) - set(b_md)):
        if key not in extra:
            out.append(f"{key}: only in ours ({_short(a_md[key])}) and not listed as an extra key")
        elif a_md[key][1] != _what_llama_cpp_derives(key, b_md):
            out.append(f"{key}: ours {a_md[key][1]}, llama.cpp derives {_what_llama_cpp_derives(key, b_md)}")
    for key in sorted(extra - set(a_md)):
        out.append(f"{key}: listed as an extra key but not written by edgekit (update the case)")
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_f32_gguf_equals_llama_cpp_convert(name, request, built, tmp_path):
    from edgekit.models.source import Checkpoint, _local
    from edgekit.quantize.gguf import Recipe, convert

    if converter_dir() is None:
        # setup.sh installs it: in CI (CI=true) its absence is a failure, not a skip
        if os.environ.get("CI"):
            pytest.fail("llama.cpp's convert_hf_to_gguf.py is missing from .venv/share (scripts/setup.sh)")
        pytest.skip(
            "llama.cpp's convert_hf_to_gguf.py is not installed (scripts/setup.sh puts it in .venv/share)"
        )
    case = CASES[name]
    if case.checkpoint.startswith("build:"):
        v: object = built(case.checkpoint.split(":", 1)[1])
    else:
        v = request.getfixturevalue(case.checkpoint)
    ck = v if isinstance(v, Checkpoint) else _local(Path(str(v)), origin="local")
    ours, ref = tmp_path / "edgekit-F32.gguf", tmp_path / "llamacpp-F32.gguf"
    convert(ck, ours, Recipe(mix="F32"))
    reference_convert(ck.path, ref, pre=case.pre, gpt2_vocab=case.gpt2_vocab)
    diffs = _differences(ours, ref, case)
    assert not diffs, (
        f"{name}: edgekit's F32 GGUF differs from llama.cpp's convert_hf_to_gguf.py:\n" + "\n".join(diffs)
    )
