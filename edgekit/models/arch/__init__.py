"""Architecture facts (`Arch`, `Tensor`) and the architecture families, one module each.

Adding an architecture: write its module here (a subclass of `ArchFamily` with its model
types as the class argument) and import it below; nothing outside this package changes.
"""

from edgekit.models.arch import (  # noqa: F401  (each module registers its families)
    dbrx,
    deepseek,
    gemma2,
    gemma3,
    llama,
    llama4,
    mixtral,
    phi3,
    qwen2,
    qwen2_moe,
    qwen3,
    qwen3_moe,
    smollm3,
)
from edgekit.models.arch.base import (
    ENTRY_POINT_GROUP,
    PRODUCERS,
    Arch,
    ArchFamily,
    GGUFMetadata,
    Tensor,
    arch_family,
    block_tensor,
    families,
    find_arch_family,
    find_gguf_family,
    gguf_names_read,
    known_model_types,
    model_types_supported_by,
    register,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRODUCERS",
    "Arch",
    "ArchFamily",
    "GGUFMetadata",
    "Tensor",
    "arch_family",
    "block_tensor",
    "families",
    "find_arch_family",
    "find_gguf_family",
    "gguf_names_read",
    "known_model_types",
    "model_types_supported_by",
    "register",
    "unregister",
]
