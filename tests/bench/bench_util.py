"""Shared by the bench tests: the default model's Q4_K_M GGUF, built once per session."""

from __future__ import annotations

import importlib.util

import pytest


def smollm2_q4km(checkpoint, tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python")
    from edgekit.quantize.gguf_build import build_gguf

    # a fixed directory under the session's base temp: a second caller finds it up to date
    return build_gguf(
        checkpoint, "Q4_K_M", tmp_path_factory.getbasetemp() / "bench-artifacts", imatrix="none"
    ).path


def has_nvml_gpu() -> bool:
    from edgekit.bench.device import nvml_gpus

    return bool(nvml_gpus()[0])


def fake_run(
    rid: str,
    label: str,
    fingerprint: str,
    decode: float,
    device: str = "cpu",
    batch: int = 1,
    created: str = "2026-01-01T00:00:00Z",
) -> dict:
    """A stored bench result as another machine would have written it."""
    stat = {
        "median": decode,
        "min": decode,
        "max": decode,
        "q1": decode,
        "q3": decode,
        "n": 1,
        "values": [decode],
    }
    return {
        "schema": "edgekit.bench/1",
        "id": rid,
        "created": created,
        "subject": {
            "path": "/x/smollm2-135m-Q4_K_M.gguf",
            "kind": "artifact",
            "format": "gguf:Q4_K_M",
            "model": "smollm2-135m",
            "size_bytes": 1,
            "sha256": None,
        },
        "runtime": {"name": "llama.cpp", "version": "llama-cpp-python 0.3.36"},
        "device": device,
        "host": {
            "label": label,
            "fingerprint": fingerprint,
            "cpu": {"model": "CPU " + label},
            "gpus": [{"name": "NVIDIA GeForce RTX 4090"}] if device == "cuda" else [],
        },
        "settings": {"prompt_tokens": 512, "gen_tokens": 128},
        "load_s": 0.1,
        "peak_rss_bytes": 100,
        "peak_vram_bytes": 200 if device == "cuda" else None,
        "batches": [
            {
                "batch": batch,
                "measured": True,
                "decode_tok_s": stat,
                "prefill_tok_s": stat,
                "ttft_s": stat,
                "roofline": {"fraction": 0.5},
            }
        ],
    }


def quality_result(kld: float):
    """A constructed QualityResult with mean KLD `kld` (one window): selection logic on known figures."""
    from edgekit.bench.quality import QualityResult

    return QualityResult(
        positions=255,
        kld_mean=kld,
        kld_stderr=kld / 10,
        kld_p99=kld * 5,
        kld_max=kld * 10,
        same_top=0.99,
        same_top_stderr=0.001,
        ppl=10.0,
        ppl_stderr=0.1,
        ppl_ref=10.0,
        ppl_ratio=1.0 + kld,
        ppl_ratio_stderr=0.001,
        tokens_per_s=100.0,
        k=8,
        window=512,
        windows=1,
    )
