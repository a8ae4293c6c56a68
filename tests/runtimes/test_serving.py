"""The shared serving benchmark with a server runtime that is not vLLM: a third party's module
(registered through an entry point) declaring `server = True`, whose "server" answers from
memory. `edgekit bench` routes it to the serving driver by that capability alone."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from edgekit.bench.speed import Settings, bench
from tests.runtimes.test_registry import install_fake_distribution

TOYSERVE = """
import os
import time
from dataclasses import dataclass

from edgekit.runtimes.serving import RequestTiming

name = "toyserve"
formats = ("bf16",)
devices = ("cpu",)
extra = None
server = True


@dataclass(frozen=True)
class Options:
    gap_s: float = 0.002
    label: str = ""


def available():
    return True, "toyserve 1.0"


def load(path, n_ctx=None, threads=None, device=None, scoring=None, on_spawn=None, on_wait=None,
         gap_s=0.002, label="", **_):
    if on_spawn is not None:
        on_spawn(os.getpid())
    return Session(gap_s, label)


class Session:
    device = "cpu"
    startup_s = 0.01
    version = "toyserve 1.0"

    def __init__(self, gap_s, label):
        self.gap_s, self.label, self.served = gap_s, label, 0

    def tokenize(self, text):
        return list(range(3, 300))

    def stream(self, tokens, max_tokens):
        rt = RequestTiming(time.perf_counter(), prompt_tokens=len(tokens))
        for _ in range(max_tokens):
            time.sleep(self.gap_s)
            rt.chunks.append((time.perf_counter(), 1))
        self.served += 1
        return rt

    def metrics(self):
        return self.served

    def metrics_delta(self, before, after):
        return {"requests_finished": after - before}

    def facts(self):
        return {"errors": [], "label": self.label}

    def describe(self):
        return {"argv": ["toyserve", self.label]}

    def close(self):
        pass
"""


@pytest.fixture
def toyserve(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path, {"toyserve": "toy_serve"}, {"toy_serve": TOYSERVE})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("toy_serve", None)


def _checkpoint(d):
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 256,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
                "head_dim": 16,
            }
        )
    )
    (d / "model.safetensors").write_bytes(b"")
    return d


def test_a_server_runtime_is_measured_by_the_shared_serving_driver(toyserve, tmp_path):
    ck = _checkpoint(tmp_path / "tiny-llama")
    levels = []
    r = bench(
        str(ck),
        runtime="toyserve",
        settings=Settings(prompt_tokens=8, gen_tokens=4, batches=(1, 2), repeats=2, warmup=1),
        save=False,
        options=["label=run1"],
        on_level=levels.append,
    )
    d = r.to_dict()
    assert d["runtime"]["name"] == "toyserve" and d["runtime"]["argv"] == ["toyserve", "run1"]
    assert d["settings"]["mode"].startswith("serving") and d["settings"]["engine"]["label"] == "run1"
    assert [b["batch"] for b in d["batches"]] == [1, 2] and len(levels) == 2
    two = d["batches"][1]
    assert two["throughput"]["requests"] == 4 and two["throughput"]["generated_tokens"] == 16
    assert two["server"] == {"requests_finished": 4} and two["itl_s"]["n"] == 4 * 3
    assert two["ttft_s"]["n"] == 4
    assert d["peak_rss_bytes"] > 0 and d["method"]["concurrency"].startswith("--batch N")
    assert d["runtime"]["log_facts"]["label"] == "run1"
