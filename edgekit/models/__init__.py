"""Model catalogue and architecture facts (pure Python: nothing heavy is imported here)."""

from edgekit.models.arch import Arch, Tensor
from edgekit.models.catalogue import License, ModelEntry, catalogue, get, resolve

__all__ = ["Arch", "Tensor", "License", "ModelEntry", "catalogue", "get", "resolve"]
