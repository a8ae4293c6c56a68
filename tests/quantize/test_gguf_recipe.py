"""A mixed GGUF's recipe reproduces the file with llama.cpp's own llama-quantize, byte for byte
(edgekit.quantize.gguf_recipe)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.torch]

LADDER = ["Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q8_0", "F16", "Q2_K"]


def _llama_quantize() -> tuple[Path, dict]:
    import llama_cpp

    site = Path(llama_cpp.__file__).resolve().parents[1]
    exe = site / "bin" / "llama-quantize"
    if not exe.is_file():
        pytest.skip("llama-cpp-python was built without its tools (llama-quantize)")
    return exe, {**os.environ, "LD_LIBRARY_PATH": str(site / "lib")}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_recipe_text_roundtrip(tmp_path):
    from edgekit.quantize import gguf_recipe as gr

    types = {"blk.10.ffn_down.weight": "Q6_K", "blk.2.attn_q.weight": "Q4_K", "token_embd.weight": "Q8_0"}
    text = gr.recipe_text({**types, "blk.2.attn_norm.weight": "F32"})
    # llama.cpp's processing order; ggml's spelling; F32 tensors are not listed
    assert text.splitlines() == [
        "^token_embd\\.weight$=q8_0",
        "^blk\\.2\\.attn_q\\.weight$=q4_K",
        "^blk\\.10\\.ffn_down\\.weight$=q6_K",
    ]
    gr.write_recipe(tmp_path / "r.txt", types)
    assert gr.read_recipe(tmp_path / "r.txt") == types
    (tmp_path / "bad.txt").write_text("attn_q=q4_K\n")
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match="exact-name"):
        gr.read_recipe(tmp_path / "bad.txt")


@pytest.mark.parametrize("name", ["tiny_qwen3", "tiny_qwen3_moe"])
def test_recipe_reproduces_the_file_with_llama_quantize(name, request, tmp_path):
    from edgekit.models.source import _local
    from edgekit.quantize import gguf_recipe as gr
    from edgekit.quantize.gguf import FILE_TYPE, Recipe, convert
    from edgekit.quantize.gguf_build import importance_matrix
    from edgekit.quantize.gguf_mix import is_quantizable
    from edgekit.quantize.unquantized import reference_gguf

    exe, env = _llama_quantize()
    ck = _local(Path(request.getfixturevalue(name)), origin="local")
    ref = reference_gguf(ck)
    im, im_path = importance_matrix(ck, "auto")
    imat = tmp_path / "m.imatrix.gguf"
    imat.write_bytes(im_path.read_bytes())
    from gguf import GGUFReader

    from edgekit.models.arch import Tensor

    types = {}
    for i, t in enumerate(GGUFReader(ref).tensors):
        shape = tuple(int(d) for d in t.shape)
        if is_quantizable(Tensor(t.name, shape, "", -1)):
            types[t.name] = LADDER[i % len(LADDER)]
    recipe = tmp_path / f"m{gr.RECIPE_SUFFIX}"
    gr.write_recipe(recipe, types)
    one = tmp_path / "one.gguf"
    convert(
        ck,
        tmp_path / "raw.gguf",
        Recipe(mix="Q4_K_M", overrides=gr.overrides(types), imatrix=im.importances()),
    )
    gr.relayout(tmp_path / "raw.gguf", one, FILE_TYPE["Q4_K_M"], gr.imatrix_kv(imat, imat.name))
    cmd = [
        str(exe),
        "--tensor-type-file",
        recipe.name,
        "--imatrix",
        imat.name,
        str(ref),
        "two.gguf",
        "Q4_K_M",
        "2",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    print(f"{name}: {one.stat().st_size} bytes, sha256 {_sha(one)[:16]}", file=sys.stderr)
    assert _sha(one) == _sha(tmp_path / "two.gguf")
