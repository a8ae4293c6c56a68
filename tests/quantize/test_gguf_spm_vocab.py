"""SentencePiece vocabularies (tokenizer.model: Llama 2, Mistral, Gemma, Phi-3/3.5) through the
one-pass converter: for tiny checkpoints carrying a SentencePiece model trained here, edgekit's
F32 GGUF equals llama.cpp's own convert_hf_to_gguf.py (tokens, scores, token types, every key),
and llama.cpp tokenizes text from the file exactly as sentencepiece does. Each flavour follows
its llama.cpp converter class: Llama's (added_tokens.json, tokenizer_config's add_prefix_space,
added tokens that look special made control tokens), Gemma 3's (no space prefix) and Phi-3's
(added tokens beyond the SentencePiece model from tokenizer.json, the config's "special" alone
deciding)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from tests.quantize.test_gguf_vs_llamacpp_convert import Case, _differences
from tests.reference.llamacpp_convert import convert as reference_convert
from tests.reference.llamacpp_convert import converter_dir

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

SPM_TOKENS = 500  # the SentencePiece model's; the checkpoints' vocab_size is larger (padding)


def train_spm(
    out: Path, *, dummy_prefix: bool, specials: dict[str, int], control: list[str], user: list[str]
):
    """A byte-fallback BPE SentencePiece model trained on our own sources, written as
    out/tokenizer.model (identity normalization, as Llama's and Gemma's)."""
    import sentencepiece as spm

    from tests.tiny_models import training_text

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in training_text().splitlines() if line.strip()]),
        model_writer=buf,
        vocab_size=SPM_TOKENS,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=dummy_prefix,
        pad_id=specials.get("pad", -1),
        unk_id=specials["unk"],
        bos_id=specials["bos"],
        eos_id=specials["eos"],
        control_symbols=control,
        user_defined_symbols=user,
        num_threads=1,
        minloglevel=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())


def _write_tokenizer(out: Path, tokenizer_class: str, added: dict[int, tuple[str, bool]], **config) -> None:
    """tokenizer.json as transformers converts the SentencePiece model (with the added tokens),
    then tokenizer_config.json as the hub's checkpoints carry it (added_tokens_decoder)."""
    from transformers import AutoTokenizer

    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    tok = AutoTokenizer.from_pretrained(out)
    new = [content for _, (content, _) in sorted(added.items()) if tok.convert_tokens_to_ids(content) is None]
    if new:
        tok.add_tokens(new)
    tmp = out / "hf"
    tok.save_pretrained(tmp)
    shutil.move(tmp / "tokenizer.json", out / "tokenizer.json")
    shutil.rmtree(tmp)
    decoder = {
        str(i): {"content": c, "special": s, "lstrip": False, "rstrip": False, "normalized": False}
        for i, (c, s) in sorted(added.items())
    }
    cfg = {"tokenizer_class": tokenizer_class, "added_tokens_decoder": decoder, **config}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def gemma_tokenizer(out: Path) -> Path:
    """Gemma's layout: <pad> <eos> <bos> <unk> first, turn markers, <mask> and <unused0> that
    the config calls not special (llama.cpp makes them control tokens), no dummy prefix."""
    train_spm(
        out,
        dummy_prefix=False,
        specials={"pad": 0, "eos": 1, "bos": 2, "unk": 3},
        control=["<start_of_turn>", "<end_of_turn>"],
        user=["<mask>", "<unused0>"],
    )
    added = {
        0: ("<pad>", True),
        1: ("<eos>", True),
        2: ("<bos>", True),
        3: ("<unk>", True),
        4: ("<start_of_turn>", True),
        5: ("<end_of_turn>", True),
        6: ("<mask>", False),
        7: ("<unused0>", False),
    }
    _write_tokenizer(
        out,
        "GemmaTokenizer",
        added,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        add_bos_token=True,
    )
    return out


def llama_tokenizer(out: Path) -> Path:
    """Llama 2's layout (<unk> <s> </s>, a dummy prefix), ChatML markers appended through
    added_tokens.json and tokenizer_config (as fine-tunes do), add_prefix_space stated."""
    train_spm(out, dummy_prefix=True, specials={"unk": 0, "bos": 1, "eos": 2}, control=[], user=[])
    added = {
        0: ("<unk>", True),
        1: ("<s>", True),
        2: ("</s>", True),
        SPM_TOKENS: ("<|im_start|>", True),
        SPM_TOKENS + 1: ("<|im_end|>", True),
        SPM_TOKENS + 2: ("\u2581reply", False),  # a user-defined token: llama.cpp writes its spaces
    }
    _write_tokenizer(out, "LlamaTokenizer", added, bos_token="<s>", eos_token="</s>", add_prefix_space=True)
    (out / "added_tokens.json").write_text(
        json.dumps({"<|im_start|>": SPM_TOKENS, "<|im_end|>": SPM_TOKENS + 1, "\u2581reply": SPM_TOKENS + 2})
    )
    return out


def phi3_tokenizer(out: Path) -> Path:
    """Phi-3.5-mini's layout: Llama 2's SentencePiece model and its chat markers appended
    after it, a placeholder the config calls not special (Phi-3's reading keeps it user-defined)."""
    train_spm(out, dummy_prefix=True, specials={"unk": 0, "bos": 1, "eos": 2}, control=[], user=[])
    added = {
        0: ("<unk>", True),
        1: ("<s>", True),
        2: ("</s>", False),
        SPM_TOKENS: ("<|endoftext|>", True),
        SPM_TOKENS + 1: ("<|assistant|>", True),
        SPM_TOKENS + 2: ("<|placeholder1|>", False),
        SPM_TOKENS + 3: ("<|end|>", True),
        SPM_TOKENS + 4: ("<|user|>", True),
    }
    _write_tokenizer(out, "LlamaTokenizer", added, bos_token="<s>", eos_token="<|endoftext|>")
    return out


def _tiny_llama(out: Path, vocab: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def _with_tokenizer(checkpoint: Path, tokenizer: Path, bos: int, eos: int, pad: int | None) -> Path:
    """The checkpoint with its BPE tokenizer replaced by the SentencePiece one (config ids too)."""
    for f in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "tokenizer.model"):
        (checkpoint / f).unlink(missing_ok=True)
        if (tokenizer / f).is_file():
            shutil.copy(tokenizer / f, checkpoint / f)
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg.update(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    (checkpoint / "config.json").write_text(json.dumps(cfg, indent=2))
    if not (checkpoint / "README.md").is_file():
        (checkpoint / "README.md").write_text("---\nlicense: apache-2.0\n---\nA tiny test model.\n")
    return checkpoint


@pytest.fixture(scope="module")
def spm_checkpoints(tmp_path_factory, tiny_tokenizer):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers")
    from tests.quantize.test_gguf_gemma3 import build_gemma3
    from tests.quantize.test_gguf_phi3 import build_phi3

    def mk(name: str) -> Path:
        return tmp_path_factory.mktemp(name)

    return {
        "gemma": _with_tokenizer(
            build_gemma3(mk("g3"), tiny_tokenizer), gemma_tokenizer(mk("g3-tok")), 2, 1, 0
        ),
        "llama": _with_tokenizer(_tiny_llama(mk("llama"), 520), llama_tokenizer(mk("llama-tok")), 1, 2, None),
        "phi3": _with_tokenizer(
            build_phi3(mk("phi3"), tiny_tokenizer), phi3_tokenizer(mk("phi3-tok")), 1, 500, None
        ),
    }


CASES = {
    "gemma": Case("gemma", "gemma3", ("vocab_size",), pre=None),
    "llama": Case(
        "llama", "llama", ("attention.key_length", "attention.value_length", "vocab_size"), pre=None
    ),
    "phi3": Case("phi3", "phi3", ("attention.key_length", "attention.value_length", "vocab_size"), pre=None),
}


def _ours(checkpoint: Path, out: Path) -> Path:
    from edgekit.models.source import _local
    from edgekit.quantize.gguf import Recipe, convert

    convert(_local(checkpoint, origin="local"), out, Recipe(mix="F32"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_spm_vocab_equals_llama_cpp_convert(name, spm_checkpoints, tmp_path):
    if converter_dir() is None:
        pytest.skip(
            "llama.cpp's convert_hf_to_gguf.py is not installed (scripts/setup.sh puts it in .venv/share)"
        )
    ck = spm_checkpoints[name]
    ours = _ours(ck, tmp_path / "edgekit-F32.gguf")
    ref = reference_convert(ck, tmp_path / "llamacpp-F32.gguf")
    diffs = _differences(ours, ref, CASES[name])
    assert not diffs, f"{name}: edgekit's GGUF differs from llama.cpp's converter:\n" + "\n".join(diffs)


@pytest.mark.parametrize("name", list(CASES))
def test_llama_cpp_tokenizes_as_sentencepiece(name, spm_checkpoints, tmp_path):
    """llama.cpp, reading the vocabulary edgekit wrote, splits text into the ids sentencepiece
    gives (the text has no added tokens in it); the added tokens are whole tokens to llama.cpp."""
    import sentencepiece as spm
    from gguf import GGUFReader
    from llama_cpp import Llama

    from edgekit.text import default_evaluation_text

    ck = spm_checkpoints[name]
    path = _ours(ck, tmp_path / "edgekit-F32.gguf")
    sp = spm.SentencePieceProcessor(model_file=str(ck / "tokenizer.model"))
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    text = default_evaluation_text()[:4000]
    for piece in (text, " leading space", "digits 20261203 and  two spaces", "naïve — ☃ 漢字"):
        assert llm.tokenize(piece.encode(), add_bos=False, special=False) == sp.encode(piece), piece
    r = GGUFReader(path)
    tokens = [
        bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode()
        for i in r.fields["tokenizer.ggml.tokens"].data
    ]
    types = [
        int(r.fields["tokenizer.ggml.token_type"].parts[i][0])
        for i in r.fields["tokenizer.ggml.token_type"].data
    ]
    added = json.loads((ck / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    for tid, t in added.items():
        if types[int(tid)] == 3:  # control: llama.cpp reads it as one token in special mode
            ids = llm.tokenize(t["content"].encode(), add_bos=False, special=True)
            assert ids == [int(tid)], (t["content"], ids)
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == 5  # padding up to vocab_size


def test_added_tokens_read_as_llama_cpp_does(spm_checkpoints):
    """The rules llama.cpp's converter applies, spelled out on the tiny Gemma and Phi-3 files."""
    from edgekit.models.gguf_vocab import CONTROL, USER_DEFINED, gguf_vocab

    g = gguf_vocab("gemma", spm_checkpoints["gemma"], 600)
    # "<mask>" and "<unused0>" say special: false; llama.cpp makes them control tokens
    assert [g["types"][i] for i in (6, 7)] == [CONTROL, CONTROL] and g["add_space_prefix"] is False
    p = gguf_vocab("phi3", spm_checkpoints["phi3"], 640)
    # Phi-3's reading: the flags alone, tokenizer.json's last (it calls </s> special, the
    # config does not); a placeholder no file calls special stays user-defined
    assert p["types"][SPM_TOKENS + 2] == USER_DEFINED and p["types"][2] == CONTROL
    assert p["tokens"][SPM_TOKENS : SPM_TOKENS + 2] == ["<|endoftext|>", "<|assistant|>"]
    lm = gguf_vocab("llama", spm_checkpoints["llama"], 520)
    assert lm["tokens"][SPM_TOKENS + 2] == " reply" and lm["types"][SPM_TOKENS + 2] == USER_DEFINED
    assert lm["add_space_prefix"] is True


def test_bad_tokenizer_model_is_one_line(tmp_path, spm_checkpoints):
    from edgekit.errors import EdgekitError
    from edgekit.models.gguf_vocab import gguf_vocab

    d = tmp_path / "ck"
    shutil.copytree(spm_checkpoints["gemma"], d, ignore=shutil.ignore_patterns("*.safetensors"))
    (d / "tokenizer.model").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgekitError, match="not a SentencePiece model"):
        gguf_vocab("gemma", d, 600)
    with pytest.raises(EdgekitError, match="do not fit the model's vocab_size"):
        gguf_vocab("gemma", spm_checkpoints["gemma"], 100)
