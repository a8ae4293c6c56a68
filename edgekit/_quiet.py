"""Keep third-party progress bars and advisory warnings out of edgekit's own output."""

import os


def quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def quiet_tqdm() -> None:
    """llm-compressor and compressed-tensors draw tqdm bars for every stage; tqdm honours
    TQDM_DISABLE (>= 4.66) for bars created after this call."""
    os.environ.setdefault("TQDM_DISABLE", "1")
