import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_dirs(tmp_path_factory):
    """Keep the user's config and cache out of the tests (and the tests out of them)."""
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
