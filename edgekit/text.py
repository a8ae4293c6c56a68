"""edgekit's own texts (calibration and evaluation, disjoint) and reading a user's text file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgekit.errors import EdgekitError


def default_calibration_text() -> str:
    return resources.files("edgekit.data").joinpath("calibration.txt").read_text(encoding="utf-8")


def default_evaluation_text() -> str:
    return resources.files("edgekit.data").joinpath("evaluation.txt").read_text(encoding="utf-8")


def read_text_file(path: Path | str, what: str) -> str:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgekitError(f"{what} {path} not found") from None
    except UnicodeDecodeError:
        raise EdgekitError(f"{what} {path} is not UTF-8 text") from None
    except OSError as e:
        raise EdgekitError(f"cannot read {what} {path}: {e.strerror}") from None
    if not text.strip():
        raise EdgekitError(f"{what} {path} is empty")
    return text
