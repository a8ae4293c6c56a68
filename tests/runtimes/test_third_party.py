"""A third-party runtime, registered through the entry point of an installed distribution (a
fake one on sys.path), is used by `edgekit eval` and `edgekit bench` for a format it declares,
with its own typed options from `-o key=value`, and no edit to edgekit.

The runtime is a small pure-Python module written here: it serves GGUF by driving
llama-cpp-python itself (not edgekit's llama.cpp runtime)."""

from __future__ import annotations

import json

import pytest

from edgekit.text import default_evaluation_text
from tests.bench.bench_util import smollm2_q4km
from tests.cli.test_bench_cli import one_line_error, run_main
from tests.runtimes.test_registry import install_fake_distribution

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

TOY = '''
"""toyllama: GGUF through llama-cpp-python, outside edgekit."""
import os
import time
from dataclasses import dataclass

name = "toyllama"
formats = ("gguf",)
devices = ("cpu",)
extra = None
install = "pip install toyllama"
description = "a third party's GGUF runtime"
packages = ("llama-cpp-python",)
kv_cache_types = ("f16",)


@dataclass(frozen=True)
class Options:
    greeting: str = ""  # must arrive as "hello": proves -o reached load()
    batch_tokens: int = 256


def available():
    try:
        import llama_cpp
    except ImportError:
        return False, "llama-cpp-python is missing"
    return True, f"toyllama 0.1 (llama-cpp-python {llama_cpp.__version__})"


def load(path, n_ctx=512, threads=None, device=None, scoring=None, greeting="", batch_tokens=256, **_):
    import llama_cpp
    from edgekit.errors import EdgekitError

    if greeting != "hello":
        raise EdgekitError(f"toyllama: the greeting option did not arrive ({greeting!r})")
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, batch_tokens), n_gpu_layers=0,
        n_threads=threads or os.cpu_count(), logits_all=scoring is not False, verbose=False,
    )
    return Session(llm, time.perf_counter() - t0)


class Session:
    device = "cpu"

    def __init__(self, llm, load_s):
        self.llm, self.load_s, self.n_vocab = llm, load_s, llm.n_vocab()

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def logits(self, tokens):
        import numpy as np

        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def generate_tokens(self, tokens, max_tokens, batch=1):
        from edgekit.runtimes.base import Generation, NotSupported

        if batch != 1:
            raise NotSupported("toyllama decodes one sequence")
        self.llm.reset()
        t0 = time.perf_counter()
        n, first = 0, 0.0
        for _ in self.llm.generate(tokens, temp=0.0, reset=True):
            n += 1
            if n == 1:
                first = time.perf_counter()
            if n >= max_tokens:
                break
        end = time.perf_counter()
        return Generation("", len(tokens), n, self.load_s, first - t0, end - first)

    def generate(self, prompt, max_tokens=64):
        return self.generate_tokens(self.tokenize(prompt), max_tokens)

    def close(self):
        self.llm.close()
'''


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-dist")
    install_fake_distribution(root, {"toyllama": "toy_llama"}, {"toy_llama": TOY})
    return str(root)


@pytest.fixture(scope="module")
def q4km(smollm2_checkpoint, tmp_path_factory):
    return smollm2_q4km(smollm2_checkpoint, tmp_path_factory)


def test_runtimes_lists_it_with_its_options(toy_path):
    r = run_main("runtimes", "--json", extra_path=toy_path)
    toy = {d["name"]: d for d in json.loads(r.stdout)}["toyllama"]
    assert (
        toy["available"] and toy["origin"] == "entry-point" and toy["options"] == ["greeting", "batch_tokens"]
    )


def test_bench_uses_the_third_party_runtime(toy_path, q4km, tmp_path):
    args = ["bench", str(q4km), "--runtime", "toyllama", "--no-save", "--json"]
    args += ["--prompt-tokens", "32", "--gen-tokens", "4", "--repeat", "1", "--warmup", "0", "--threads", "2"]
    r = run_main(*args, "-o", "greeting=hello", "-o", "batch_tokens=64", extra_path=toy_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["runtime"]["name"] == "toyllama" and d["runtime"]["entry_point"] == "toy_llama"
    assert d["batches"][0]["measured"] and d["batches"][0]["decode_tok_s"]["n"] == 1
    line = one_line_error(
        run_main(*args, "-o", "greting=hello", extra_path=toy_path), "unknown option 'greting'"
    )
    assert "greeting, batch_tokens" in line
    one_line_error(run_main(*args, extra_path=toy_path), "the greeting option did not arrive")


def test_eval_uses_the_third_party_runtime(toy_path, q4km, tmp_path):
    text = tmp_path / "eval.txt"
    text.write_text(default_evaluation_text()[:2500])
    args = ["eval", str(q4km), "--reference", "smollm2-135m", "--evaluation", str(text), "--json"]
    r = run_main(*args, "--runtime", "toyllama", "-o", "greeting=hello", extra_path=toy_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["runtime"] == "toyllama" and d["quality"]["positions"] > 0
    ours = json.loads(run_main(*args, extra_path=toy_path).stdout)
    assert ours["runtime"] == "llama.cpp"  # the format's own runtime stays the default
    # same weights, same engine underneath: the same figures
    assert d["quality"]["kld_mean"] == pytest.approx(ours["quality"]["kld_mean"], rel=1e-3, abs=1e-5)
