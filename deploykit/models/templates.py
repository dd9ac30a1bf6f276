"""Chat templates: render a model's Jinja template, and convert it to Ollama's Go syntax.

A Hugging Face chat template is Jinja; Ollama's is Go's text/template over .Messages
(.Role, .Content). `go_template` converts the families deploykit ships:

- "chatml": `<|im_start|>role\\ncontent<|im_end|>\\n` turns, as in smollm2-135m, with the
  default system message its Jinja template adds when the first message is not a system one;
- "inst": the toy models' Llama-2 style (`<<SYS>> ... <</SYS>>`, `[INST] ... [/INST]`,
  ` answer</s>`).

A template is recognised by rendering it (Jinja) for probe conversations and comparing with
each family, so a template that only looks similar is refused, never mistranslated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidArgumentError, MissingExtraError


@dataclass(frozen=True)
class _Family:
    """One chat-template family: how it renders (as the Jinja does) and its Go template."""

    name: str
    # (messages, default_system, bos, eos) -> the prompt the Jinja template must produce
    render: Callable[[list[dict[str, str]], str | None, str, str], str]
    # (default_system, bos or "", eos) -> the Go template
    go: Callable[[str | None, str, str], str]
    stops: tuple[str, ...]  # Ollama's own library template for the family stops on these


def _chatml(messages: list[dict[str, str]], default_system: str | None, bos: str, eos: str) -> str:
    out = []
    for i, m in enumerate(messages):
        if i == 0 and m["role"] != "system" and default_system is not None:
            out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    return "".join(out) + "<|im_start|>assistant\n"


def _chatml_go(default_system: str | None, bos: str, eos: str) -> str:
    # Ollama's template/chatml.gotmpl, plus the default system turn of the Jinja template
    turns = "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    if default_system is None:
        return bos + "{{- range .Messages }}" + turns
    return (
        bos + "{{- range $i, $_ := .Messages }}"
        '{{ if and (eq $i 0) (ne .Role "system") }}<|im_start|>system\n'
        + default_system
        + "<|im_end|>\n{{ end }}"
        + turns
    )


def _inst(messages: list[dict[str, str]], default_system: str | None, bos: str, eos: str) -> str:
    out = [bos]
    for m in messages:
        c = m["content"]
        out.append(
            {
                "system": f"<<SYS>> {c} <</SYS>>\n",
                "user": f"[INST] {c} [/INST]",
                "assistant": f" {c}{eos}\n",
            }[m["role"]]
        )
    return "".join(out)


def _inst_go(default_system: str | None, bos: str, eos: str) -> str:
    return (
        bos + '{{- range .Messages }}{{ if eq .Role "system" }}<<SYS>> {{ .Content }} '
        '<</SYS>>\n{{ else if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
        '{{ else if eq .Role "assistant" }} {{ .Content }}' + eos + "\n{{ end }}{{ end }}"
    )


FAMILIES = (
    _Family("chatml", _chatml, _chatml_go, ("<|im_start|>", "<|im_end|>")),
    # stops as Ollama's template/llama2-chat.json
    _Family("inst", _inst, _inst_go, ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")),
)
_PROBE_USER = "dk-probe question one"
_PROBES = (  # system, user, assistant, user — and the shapes without a system message
    [{"role": "user", "content": _PROBE_USER}],
    [{"role": "system", "content": "dk-probe system"}, {"role": "user", "content": _PROBE_USER}],
    [
        {"role": "system", "content": "dk-probe system"},
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": "dk-probe answer"},
        {"role": "user", "content": "dk-probe question two"},
    ],
    [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": "dk-probe answer"},
        {"role": "user", "content": "dk-probe question two"},
    ],
)


@dataclass(frozen=True)
class GoTemplate:
    """A chat template converted for Ollama: the Go template, its family and stop strings."""

    text: str
    family: str
    stops: tuple[str, ...]
    default_system: str | None = None


def render_chat_template(
    chat_template: str,
    messages: list[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render a Jinja chat template the way transformers' apply_chat_template does."""
    try:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise MissingExtraError(
            "converting a chat template needs jinja2: pip install jinja2"
        ) from None

    def raise_exception(message: str):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def go_template(
    chat_template: str, *, bos_token: str = "", eos_token: str = "", add_bos_token: bool = True
) -> GoTemplate:
    """Convert a Jinja chat template of a known family into Ollama's Go template syntax.

    bos_token/eos_token are the model's special tokens as text. add_bos_token says whether
    the runtime prepends BOS when tokenizing (the GGUF's tokenizer.ggml.add_bos_token); if
    so the Go template leaves it out, as Ollama's own templates do.
    """
    unrecognised = InvalidArgumentError(
        "this chat template is not one deploykit converts (ChatML as in smollm2-135m, or the "
        "toy models' [INST] style); write the Go template yourself and pass it as "
        "modelfile(gguf, template=...) (see Ollama's docs/template.mdx)."
    )
    try:
        rendered = [
            render_chat_template(chat_template, m, bos_token=bos_token, eos_token=eos_token)
            for m in _PROBES
        ]
    except Exception as exc:  # a template that fails on a plain conversation is not ours
        raise unrecognised from exc
    default_system = _chatml_default_system(rendered[0])
    if default_system is not None and ("{{" in default_system or "}}" in default_system):
        raise unrecognised  # Go would read it as an action
    # BOS the Jinja writes but the runtime will not add must be written by the Go template
    # (only a template that names bos_token writes it: ChatML's <|im_start|> may be the BOS
    # token's text, yet a ChatML template writes it as part of each turn)
    writes_bos = (
        bool(bos_token) and "bos_token" in chat_template and rendered[0].startswith(bos_token)
    )
    lead = bos_token if writes_bos and not add_bos_token else ""
    for family in FAMILIES:
        default = default_system if family.name == "chatml" else None
        if all(
            out == family.render(msgs, default, bos_token, eos_token)
            for msgs, out in zip(_PROBES, rendered)
        ):
            return GoTemplate(
                family.go(default, lead, eos_token), family.name, family.stops, default
            )
    raise unrecognised


def _chatml_default_system(rendered: str) -> str | None:
    """Return the system message a ChatML template adds to a conversation without one."""
    head = "<|im_start|>system\n"
    if rendered.startswith(head) and "<|im_end|>\n" in rendered:
        return rendered[len(head) : rendered.index("<|im_end|>\n")]
    return None
