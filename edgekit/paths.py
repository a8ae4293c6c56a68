"""Where edgekit keeps user configuration and caches (XDG-style, overridable by env)."""

import os
from pathlib import Path


def config_dir() -> Path:
    if env := os.environ.get("EDGEKIT_CONFIG_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgekit"


def cache_dir() -> Path:
    if env := os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekit"


def user_targets_dir() -> Path:
    return config_dir() / "targets"
