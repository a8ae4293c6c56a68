"""A model's own Jinja chat template rendered the way Hugging Face transformers renders it
(`apply_chat_template`): jinja2's immutable sandbox with trim_blocks and lstrip_blocks, the
loop-controls extension, a `{% generation %}` block that only renders its body, a `tojson`
filter that keeps non-ASCII text and takes indent/separators/sort_keys (json.dumps, not
jinja2's HTML-escaping one), `raise_exception` and `strftime_now` globals, and the tokenizer's
special tokens (bos_token, eos_token, ...) as variables. `continue_final_message` cuts the
prompt after the last message's text, as transformers does. Written from transformers'
behaviour (utils/chat_template_utils.py, 5.x); edgekit's conformance gate compares it with the
Go template Ollama would render."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edgekit.errors import EdgekitError


class ChatTemplateError(EdgekitError):
    """The chat template does not compile, or refuses the conversation (raise_exception)."""


_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _environment(now: Callable[[], datetime]):
    try:
        import jinja2
        import jinja2.ext
        import jinja2.nodes
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ChatTemplateError(
            "rendering a model's chat template needs jinja2", "pip install jinja2"
        ) from None

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now().strftime(fmt)
    return env, jinja2


def render(
    chat_template: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    special_tokens: dict[str, str] | None = None,
    now: Callable[[], datetime] = datetime.now,
    **kwargs: Any,
) -> str:
    """The prompt `tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, ...)`
    would give. Errors (a syntax error, the template's own raise_exception, a type error
    inside it) are one-line ChatTemplateErrors."""
    env, jinja2 = _environment(now)
    try:
        compiled = env.from_string(chat_template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not compile: line {e.lineno}: {e.message}") from None
    chat = [dict(m) for m in messages]
    final = None
    if continue_final_message:
        final = chat[-1].get("content")
        if not isinstance(final, str):
            raise ChatTemplateError("continue_final_message needs a final message with text")
        chat[-1]["content"] = final + _CONTINUE_TAG
    try:
        out = compiled.render(
            messages=chat,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **(special_tokens or {}),
            **kwargs,
        )
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template refuses the conversation: {_one_line(e)}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ChatTemplateError(f"the chat template fails: {type(e).__name__}: {_one_line(e)}") from None
    if final is not None:
        tag = _CONTINUE_TAG.strip()
        if final.strip() not in out or tag not in out:
            raise ChatTemplateError(
                "the chat template drops part of the final message: it cannot be continued"
            )
        at = out.rindex(tag)
        out = out[:at] if out[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else out[:at].rstrip()
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
