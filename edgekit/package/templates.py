"""Ollama chat templates (Go text/template) per model family, with the family's sampling
defaults and stop tokens, and the rule that picks a family for a GGUF.

The templates reproduce each family's own chat format: what the model saw in training is
what makes it behave. Qwen3's keeps tools and the thinking toggle: with `think: false`
Ollama sets `.IsThinkSet` and clears `.Think`, and the template then opens the answer with
an empty think block, exactly what Qwen's `enable_thinking=False` does; earlier turns' thinking
is dropped and only the trace after the last user turn is replayed, as Qwen's own template does.
Ollama finds tool calls in the output by the first text of the first `{{ if .ToolCalls }}`
block (`<tool_call>`), so the calls sit in one, with the separating newline and the tag in
one text either way.
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
{{- if .ToolCalls }}{{ range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}
<tool_call>{{ else }}<tool_call>{{ end }}
{"name": "{{ $call.Function.Name }}", "arguments": {{ $call.Function.Arguments }}}
</tool_call>{{ end }}{{ end }}
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

# Llama 3.1 / 3.2 / 3.3 Instruct (meta-llama/Llama-3.x-*-Instruct): a system turn always opens
# the prompt with the knowledge cut-off and the date (the 3.1 template's fixed 26 Jul 2024; 3.2's
# writes today's date, which Go templates cannot format that way: a listed difference), the
# first system message's text after it; with tools, "Environment: ipython" and the JSON tool
# definitions in the first user turn; a call is {"name": ..., "parameters": ...} (Ollama finds
# it by the leading "{"), a tool result an ipython turn holding the result as a JSON string
# (the template's tojson of a string, which Jinja counts as iterable).
LLAMA3 = """\
{{- $system := "" }}{{ $start := 0 }}
{{- range $i, $m := .Messages }}{{ if and (eq $i 0) (eq .Role "system") }}{{ $system = .Content }}{{ $start = 1 }}{{ end }}{{ end }}
{{- $toolsAt := -1 }}{{ if .Tools }}{{ $toolsAt = $start }}{{ end -}}
<|start_header_id|>system<|end_header_id|>

{{ if .Tools }}Environment: ipython
{{ end }}Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

{{ $system }}<|eot_id|>
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if lt $i $start }}
{{- else if eq $i $toolsAt }}<|start_header_id|>user<|end_header_id|>

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{{ range $.Tools }}{{ . }}

{{ end }}{{ .Content }}<|eot_id|>
{{- else if or (eq .Role "tool") (eq .Role "ipython") }}<|start_header_id|>ipython<|end_header_id|>

{{ json .Content }}<|eot_id|>
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}<|eot_id|>
{{- else }}{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- else }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
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

# Gemma 3 (google/gemma-3-*-it): turns are <start_of_turn>user / <start_of_turn>model, each closed
# by <end_of_turn> and a newline; a leading system message has no turn of its own: its text and
# a blank line open the first user turn. (The Jinja template also strips each message, which Go
# templates cannot: content Ollama passes is used as is.)
GEMMA3 = """\
{{- $prefix := "" }}
{{- $first := true }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if and (eq $i 0) (eq .Role "system") }}{{ $prefix = .Content }}
{{- else }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- else }}<start_of_turn>{{ if eq .Role "tool" }}user{{ else }}{{ .Role }}{{ end }}
{{ if and $first $prefix }}{{ $prefix }}

{{ end }}{{ .Content }}<end_of_turn>
{{ end }}
{{- $first = false }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<start_of_turn>model
{{ end }}
{{- end }}"""

# Phi-3 / Phi-3.5-mini (microsoft/Phi-3.5-mini-instruct): <|role|>, a newline, the text, <|end|>
# and a newline; an empty system message is left out.
PHI3 = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}{{ if .Content }}<|system|>
{{ .Content }}<|end|>
{{ end }}
{{- else if eq .Role "user" }}<|user|>
{{ .Content }}<|end|>
{{ else if eq .Role "assistant" }}<|assistant|>
{{ .Content }}{{ if not $last }}<|end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|assistant|>
{{ end }}
{{- end }}"""

# Phi-4 (microsoft/phi-4): <|im_start|>role<|im_sep|>text<|im_end|>, no newlines.
PHI4 = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "system") (eq .Role "user") }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>
{{- else if eq .Role "assistant" }}<|im_start|>assistant<|im_sep|>{{ .Content }}{{ if not $last }}<|im_end|>{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant<|im_sep|>{{ end }}
{{- end }}"""

# DeepSeek-R1 and its distills (deepseek-ai/DeepSeek-R1-Distill-*): the last system message first,
# then <｜User｜> / <｜Assistant｜> turns, an answer closed by <｜end▁of▁sentence｜>; the answer
# opens with <think> and a newline. With think off the block is closed at once, as the Qwen-32B
# distill's template does for enable_thinking false; unset, it stays open as R1 was trained and
# as the Llama-8B distill's template always does (the Qwen-32B one closes it unless asked).
# Earlier answers are replayed without their thinking (the Jinja template cuts at </think>;
# Ollama keeps thinking apart in .Thinking); a last, unfinished answer keeps it, which is also
# where Ollama reads the thinking tags from.
DEEPSEEK_R1 = """\
{{- $system := "" }}
{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}
{{- $system }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<｜User｜>{{ .Content }}
{{- else if eq .Role "assistant" }}<｜Assistant｜>
{{- if and $last .Thinking }}<think>
{{ .Thinking }}
</think>

{{ end }}{{ .Content }}{{ if not $last }}<｜end▁of▁sentence｜>{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<｜Assistant｜><think>
{{ if and $.IsThinkSet (not $.Think) }}</think>{{ end }}
{{- end }}
{{- end }}"""


# Mistral / Mixtral without tools ([INST] turns, the answer closed by </s>); the system message
# has no turn of its own. Two published layouts: Mixtral-8x7B-Instruct-v0.1 and Mistral-7B v0.1
# (mistral-common "v1": " [INST] " and " [/INST]" with spaces, the system text and a blank line
# open the first user turn) and Mixtral-8x22B-Instruct-v0.1 ("[INST] " and "[/INST]", the system
# text opens the last user turn, as Mistral's v3 templates put it). A template with
# [AVAILABLE_TOOLS] (Mistral-7B-Instruct-v0.3, Nemo, Small) is left to Ollama's rendering of the
# GGUF's own: the tool list goes just before the last user turn, and Nemo's and Small 3.2's
# refuse tool call IDs that are not nine characters, which the conformance suite does not carry.
def _mistral(lead: str, close: str, system_on_last: bool) -> str:
    where = "$last" if system_on_last else "(eq $i $start)"
    return (
        """\
{{- $system := "" }}{{ $start := 0 }}
{{- range $i, $m := .Messages }}{{ if and (eq $i 0) (eq .Role "system") }}{{ $system = .Content }}{{ $start = 1 }}{{ end }}{{ end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if lt $i $start }}
{{- else if eq .Role "user" }}"""
        + lead
        + "[INST] {{ if and $system "
        + where
        + """ }}{{ $system }}

{{ end }}{{ .Content }}"""
        + close
        + """[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}{{ if not $last }}</s>{{ end }}
{{- end }}
{{- end }}"""
    )


MISTRAL_V1 = _mistral(" ", " ", system_on_last=False)
MIXTRAL_8X22B = _mistral("", "", system_on_last=True)


# What Qwen3 writes when it calls a tool (its chat template's instructions, and its output)
QWEN3_TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
# What Llama 3.1 writes (its template asks for {"name": function name, "parameters": ...})
LLAMA3_TOOL_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'

# Tokens that end a turn in a template; a template that writes one needs it as a stop.
END_OF_TURN = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<｜end▁of▁sentence｜>",
)


@dataclass(frozen=True)
class Family:
    # qwen3 | llama3 | chatml | gemma3 | phi3 | phi4 | deepseek-r1 | mistral | gguf (the GGUF's own)
    name: str
    template: str | None  # None: leave TEMPLATE out so Ollama uses tokenizer.chat_template
    parameters: tuple[tuple[str, float | int], ...]
    stop: tuple[str, ...]
    thinking: bool
    reason: str
    # the tag the model opens a tool call with, where the template offers tools; with one
    # the family also gives a sample of the model's own tool-call output
    tool_tag: str | None = None
    tool_call_sample: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "template": "gguf" if self.template is None else self.name,
            "parameters": dict(self.parameters),
            "stop": list(self.stop),
            "thinking": self.thinking,
            "tool_tag": self.tool_tag,
            "reason": self.reason,
        }


# Sampling defaults as each model's publisher states them: Qwen3's for thinking mode
# (generation_config.json and Ollama's library); Meta's generation_config for Llama 3.x Instruct;
# Gemma 3's generation_config (top_k 64, top_p 0.95) at temperature 1; DeepSeek-R1's model card
# (temperature 0.6, top_p 0.95). Phi-3.5 and Phi-4 publish none: Ollama's defaults apply.
_QWEN3_PARAMS = (("temperature", 0.6), ("top_k", 20), ("top_p", 0.95), ("repeat_penalty", 1))
_LLAMA3_PARAMS = (("temperature", 0.6), ("top_p", 0.9))
_GEMMA3_PARAMS = (("temperature", 1.0), ("top_k", 64), ("top_p", 0.95))
_DEEPSEEK_R1_PARAMS = (("temperature", 0.6), ("top_p", 0.95))
_CHATML_STOP = ("<|im_start|>", "<|im_end|>")
_LLAMA3_STOP = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_GEMMA3_STOP = ("<start_of_turn>", "<end_of_turn>")
_PHI3_STOP = ("<|user|>", "<|assistant|>", "<|end|>")
_PHI4_STOP = ("<|im_start|>", "<|im_sep|>", "<|im_end|>")
_DEEPSEEK_STOP = ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>")
_MISTRAL_STOP = ("[INST]", "[/INST]", "</s>")
QWEN3_ARCHS = ("qwen3", "qwen3moe")


def choose_family(
    architecture: str,
    has_token: Callable[[str], bool],
    chat_template: str | None,
    eos_token: str | None = None,
) -> Family:
    """The template for a GGUF: the architecture and the tokenizer's special tokens first (the
    DeepSeek-R1 distills are qwen2 and llama files with DeepSeek's tokens), then the GGUF's own
    chat template."""

    def has_all(tokens: tuple[str, ...]) -> bool:
        return all(has_token(t) for t in tokens)

    chatml = has_all(_CHATML_STOP)
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
            tool_tag="<tool_call>",
            tool_call_sample=QWEN3_TOOL_CALL,
        )
    if has_all(_DEEPSEEK_STOP) and (chat_template is None or _r1_style(chat_template)):
        return Family(
            "deepseek-r1",
            DEEPSEEK_R1,
            _DEEPSEEK_R1_PARAMS,
            _DEEPSEEK_STOP,
            True,
            f"architecture {architecture} with DeepSeek's turn tokens and an R1 chat template "
            "(the answer opens with <think>); no tool calls",
        )
    if architecture == "gemma3" and has_all(_GEMMA3_STOP):
        return Family(
            "gemma3",
            GEMMA3,
            _GEMMA3_PARAMS,
            ("<end_of_turn>",),
            False,
            "architecture gemma3 with <start_of_turn>/<end_of_turn> tokens",
        )
    if architecture == "phi3" and has_all(_PHI4_STOP):
        return Family("phi4", PHI4, (), _PHI4_STOP, False, "architecture phi3 with <|im_sep|> (Phi-4)")
    if architecture == "phi3" and has_all(_PHI3_STOP):
        return Family(
            "phi3", PHI3, (), _PHI3_STOP, False, "architecture phi3 with <|user|>/<|end|> (Phi-3 / Phi-3.5)"
        )
    if architecture == "llama" and has_all(_LLAMA3_STOP):
        return Family(
            "llama3",
            LLAMA3,
            _LLAMA3_PARAMS,
            _LLAMA3_STOP,
            False,
            "llama architecture with Llama-3 header tokens: the Llama 3.1/3.2 template with the date "
            "preamble and tools",
            tool_tag="{",
            tool_call_sample=LLAMA3_TOOL_CALL,
        )
    if architecture == "llama" and chatml:
        return Family(
            "chatml", CHATML, (), _CHATML_STOP, False, "llama architecture with ChatML tokens (SmolLM2)"
        )
    mistral = _mistral_layout(chat_template) if architecture == "llama" and has_token("</s>") else None
    if mistral is not None:
        return Family(
            "mistral",
            mistral[0],
            (),
            _MISTRAL_STOP,
            False,
            f"llama architecture with Mistral's [INST] chat template ({mistral[1]}); no tool calls",
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
            f"no edgekit template for architecture {architecture} with this chat format; "
            "Ollama uses the GGUF's own chat template",
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


def _mistral_layout(chat_template: str | None) -> tuple[str, str] | None:
    """The Mistral template whose layout this chat template has, or None (no [INST] template, or
    one with tools: Ollama renders that one itself)."""
    if not chat_template or "[INST]" not in chat_template or "[AVAILABLE_TOOLS]" in chat_template:
        return None
    if "loop.first and system_message is defined" in chat_template and "' [INST] '" in chat_template:
        return MISTRAL_V1, "Mixtral-8x7B / Mistral-7B v1 layout"
    if "loop.last and system_message is defined" in chat_template and "'[/INST]'" in chat_template:
        return MIXTRAL_8X22B, "Mixtral-8x22B layout, the system text in the last user turn"
    return None


def _r1_style(chat_template: str) -> bool:
    """DeepSeek-R1's templates open the answer with <think> and a newline (V3 and V3.1's do not:
    V3.1 writes an empty think block unless thinking is asked for)."""
    return "<｜Assistant｜><think>\\n" in chat_template or "<｜Assistant｜><think>\n" in chat_template


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
