"""llama.cpp's own Hugging Face -> GGUF converter (convert_hf_to_gguf.py), run as a reference.

scripts/setup.sh unpacks it from the source release of the pinned llama-cpp-python into
.venv/share/llama.cpp-convert. `convert()` runs it in a subprocess on a checkpoint directory
(`--outtype f32`); run as a script, this file is that subprocess: it puts the converter and
its own gguf-py first on sys.path, adjusts two of the converter's choices where the tiny test
checkpoints need it, and calls the converter's main(). Nothing of the converter is copied.

The two adjustments:
- the tiny tokenizers are trained in the tests, so the hash llama.cpp takes of their
  pre-tokenizer's output is in no table of its own: `pre` names the pre-tokenizer to use
  when (and only when) the converter does not recognise the hash;
- `gpt2_vocab`: the model class writes its vocabulary as a GPT-2 byte-level BPE one (its
  `_set_vocab_gpt2`), as llama.cpp's Phi-3 class does for Phi-4's tokenizer class but not for
  the PreTrainedTokenizerFast of the tiny checkpoints (it would look for tokenizer.model).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONVERTER = "convert_hf_to_gguf.py"


def converter_dir() -> Path | None:
    """Where setup.sh put llama.cpp's converter in this environment; None when absent."""
    d = Path(os.environ.get("EDGEKIT_LLAMACPP_CONVERT", Path(sys.prefix) / "share" / "llama.cpp-convert"))
    return d if (d / CONVERTER).is_file() else None


def convert(
    checkpoint: Path, out: Path, pre: str | None = None, gpt2_vocab: bool = False, timeout: float = 900
) -> Path:
    """`checkpoint` as an F32 GGUF at `out`, written by llama.cpp's converter."""
    d = converter_dir()
    if d is None:
        raise FileNotFoundError("llama.cpp's convert_hf_to_gguf.py is not installed (run scripts/setup.sh)")
    cmd = [sys.executable, __file__, str(d), str(checkpoint), str(out), pre or "", "1" if gpt2_vocab else "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"llama.cpp's converter failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return out


def _main(convert_dir: str, checkpoint: str, out: str, pre: str, gpt2_vocab: str) -> None:
    # the converter's gguf-py before the installed gguf package, as the converter itself does
    sys.path[:0] = [str(Path(convert_dir) / "gguf-py"), convert_dir]
    import convert_hf_to_gguf as cli
    from conversion.base import TextModel

    if pre:
        known = TextModel.get_vocab_base_pre

        def vocab_base_pre(self, tokenizer) -> str:
            try:
                return known(self, tokenizer)
            except NotImplementedError:  # a hash in none of llama.cpp's tables
                return pre

        TextModel.get_vocab_base_pre = vocab_base_pre  # type: ignore[method-assign]
    if gpt2_vocab == "1":
        find = cli.get_model_class

        def model_class(name: str, mmproj: bool = False):
            cls = find(name, mmproj=mmproj)
            cls.set_vocab = TextModel._set_vocab_gpt2  # type: ignore[method-assign]
            return cls

        cli.get_model_class = model_class
    sys.argv = [CONVERTER, checkpoint, "--outtype", "f32", "--outfile", out]
    cli.main()


if __name__ == "__main__":
    _main(*sys.argv[1:6])
