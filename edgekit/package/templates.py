"""Ollama chat templates (Go text/template) per model family, with the family's sampling
defaults and stop tokens, and the rule that picks a family for a GGUF.

The templates reproduce each family's own chat format: what the model saw in training is
what makes it behave. Qwen3's keeps tools and the thinking toggle: with `think: false`
Ollama sets `.IsThinkSet` and clears `.Think`, and the template then opens the answer with
an empty think block, exactly what Qwen's `enable_thinking=False` does; earlier turns' thinking
is dropped and only the trace after the last user turn is replayed, as Qwen's own template does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekit.errors import EdgekitError

EMPTY_THINK = "<think>\n\n</think>\n\n"

QWEN3 = """\
{{- $lastQuery := -1 }}
{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $lastQuery = $i }}{{ end }}{{ end }}
{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ if .Tools }}

{{ end }}{{ end }}
{{- if .Tools }}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- $inTools := false }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if and $inTools (ne .Role "tool") }}<|im_end|>
{{ $inTools = false }}{{ end }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and .Thinking (gt $i $lastQuery) }}<think>
{{ .Thinking }}
</think>

{{ end }}
{{- .Content }}
{{- range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>
{"name": "{{ $call.Function.Name }}", "arguments": {{ $call.Function.Arguments }}}
</tool_call>{{ end }}
{{- if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}
{{- if not $inTools }}<|im_start|>user{{ $inTools = true }}{{ end }}
<tool_response>
{{ .Content }}
</tool_response>
{{- if $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}
{{- end }}
{{- end }}"""

LLAMA3 = """\
{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|start_header_id|>{{ if eq .Role "tool" }}ipython{{ else }}{{ .Role }}{{ end }}<|end_header_id|>

{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|eot_id|>{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""

CHATML = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|im_end|>
{{ end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""

# Tokens that end a turn in a template; a template that writes one needs it as a stop.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Family:
    name: str  # qwen3 | llama3 | chatml | gguf (the GGUF's own chat template)
    template: str | None  # None: leave TEMPLATE out so Ollama uses tokenizer.chat_template
    parameters: tuple[tuple[str, float | int], ...]
    stop: tuple[str, ...]
    thinking: bool
    reason: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "template": "gguf" if self.template is None else self.name,
            "parameters": dict(self.parameters),
            "stop": list(self.stop),
            "thinking": self.thinking,
            "reason": self.reason,
        }


# Qwen3's published sampling for thinking mode (generation_config.json and Ollama's library);
# Meta's generation_config for Llama 3.x Instruct.
_QWEN3_PARAMS = (("temperature", 0.6), ("top_k", 20), ("top_p", 0.95), ("repeat_penalty", 1))
_LLAMA3_PARAMS = (("temperature", 0.6), ("top_p", 0.9))
_CHATML_STOP = ("<|im_start|>", "<|im_end|>")
_LLAMA3_STOP = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
QWEN3_ARCHS = ("qwen3", "qwen3moe")


def choose_family(
    architecture: str,
    has_token: Callable[[str], bool],
    chat_template: str | None,
    eos_token: str | None = None,
) -> Family:
    """The template for a GGUF: the architecture first, then the tokenizer's special tokens,
    then the GGUF's own chat template."""
    chatml = all(has_token(t) for t in _CHATML_STOP)
    llama3 = all(has_token(t) for t in _LLAMA3_STOP)
    if architecture in QWEN3_ARCHS:
        if not chatml:
            raise EdgekitError(
                f"a {architecture} GGUF without <|im_start|>/<|im_end|> tokens",
                "the tokenizer does not match the architecture; rebuild the artifact",
            )
        return Family(
            "qwen3",
            QWEN3,
            _QWEN3_PARAMS,
            _CHATML_STOP,
            True,
            f"architecture {architecture}: Qwen3 template with tools and the thinking toggle",
        )
    if architecture == "llama" and llama3:
        return Family(
            "llama3",
            LLAMA3,
            _LLAMA3_PARAMS,
            _LLAMA3_STOP,
            False,
            "llama architecture with Llama-3 header tokens",
        )
    if architecture == "llama" and chatml:
        return Family(
            "chatml", CHATML, (), _CHATML_STOP, False, "llama architecture with ChatML tokens (SmolLM2)"
        )
    thinking = chat_template is not None and (
        "<think>" in chat_template or "enable_thinking" in chat_template
    )
    if chat_template:
        stop = (eos_token,) if eos_token else ()
        return Family(
            "gguf",
            None,
            (),
            stop,
            thinking,
            f"no edgekit template for architecture {architecture}; Ollama uses the GGUF's own chat template",
        )
    if chatml:
        return Family(
            "chatml",
            CHATML,
            (),
            _CHATML_STOP,
            False,
            f"architecture {architecture} has no chat template in the GGUF; its tokenizer has ChatML tokens",
        )
    raise EdgekitError(
        f"no chat template for architecture '{architecture}': the GGUF carries none and its "
        "tokenizer has neither ChatML nor Llama-3 tokens",
        "Ollama would prompt it with raw text; add a chat template to the GGUF first",
    )


def default_system(chat_template: str | None) -> str | None:
    """The system prompt a chat template inserts when the conversation has none (SmolLM2 names
    itself there). With our TEMPLATE in place that default would be lost, so SYSTEM keeps it."""
    import re

    if not chat_template:
        return None
    m = re.search(
        r"""!=\s*['"]system['"]\s*%\}\s*\{\{-?\s*(['"])<\|im_start\|>system\n(.+?)<\|im_end\|>""",
        chat_template,
        re.S,
    )
    if m is None or m.group(1) in m.group(2):
        return None
    return m.group(2).strip() or None
