"""SmolLM3: a Llama layout (some layers skip RoPE, which changes no tensor). q/k/v biases
as the config's attention_bias says. Planned and sized; no producer is tested on it yet."""

from __future__ import annotations

from edgekit.models.arch.base import ArchFamily


class SmolLM3(ArchFamily, model_types=("smollm3",)):
    hf_class = "SmolLM3ForCausalLM"
    gguf_names = ("smollm3",)
