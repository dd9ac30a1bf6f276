"""The OpenAI dialect's cases: health, the model list, completions and chat, streams, errors.

The reference is OpenAI's API as its documentation and official client define it: errors are
`{"error": {"message", "type", ...}}` with 400 for a bad request and 404 for an unknown
model; a stream is SSE `data:` lines ending in `data: [DONE]`; `stream_options.include_usage`
adds one last chunk with empty `choices` and the usage.
"""

from __future__ import annotations

from typing import Any

from ._case import Case, Context, Outcome, failed, passed, skipped, warned
from ._http import StreamReply
from .common import (
    BadInput,
    Dialect,
    Generation,
    filler_prompt,
    first_line,
    oversized,
    pick_stop,
    short_prompt,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
UNKNOWN_MODEL = "no-such-model-deploykit-check"


class OpenAIDialect(Dialect):
    name = "openai"
    error_shape_name = "error.message"

    def generation(self, ctx: Context, max_tokens: int, stream: bool, prompt: str) -> Generation:
        body: dict[str, Any] = {
            "model": ctx.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if stream:
            body["stream"] = True
        return Generation(CHAT, body)

    def text(self, data: Any) -> str:
        try:
            choice = data["choices"][0]
            return choice.get("message", {}).get("content") or choice.get("text") or ""
        except (KeyError, IndexError, TypeError):
            return ""

    def stream_text(self, reply: StreamReply) -> str:
        out = []
        for event in reply.json_events:
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                out.append(delta.get("content") or choice.get("text") or "")
        return "".join(out)

    def error_problem(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return "the body is not JSON"
        err = data.get("error")
        if not isinstance(err, dict):
            keys = ", ".join(sorted(data)) or "nothing"
            return f"the body has {keys}, not an 'error' object"
        if not isinstance(err.get("message"), str) or not err["message"]:
            return "error.message is missing"
        return None

    def bad_inputs(self) -> list[BadInput]:
        return BAD_INPUTS


DIALECT = OpenAIDialect()


def _chat(ctx: Context, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ctx.model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": ctx.max_tokens,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


def _completion(ctx: Context, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": ctx.model, "prompt": "Hello", "max_tokens": ctx.max_tokens}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()  # a field left out of a body


def _bad_chat(name: str, doc: str, strict: bool = True, **fields: Any) -> BadInput:
    return BadInput(name, doc, CHAT, lambda ctx: _chat(ctx, **fields), strict=strict)


def _bad_completion(name: str, doc: str, strict: bool = True, **fields: Any) -> BadInput:
    return BadInput(name, doc, COMPLETIONS, lambda ctx: _completion(ctx, **fields), strict=strict)


BAD_INPUTS = [
    BadInput("malformed_json", "a body that is not JSON", CHAT, raw='{"model": "m", "messages": ['),
    BadInput("body_not_object", "a JSON array instead of an object", CHAT, raw="[1, 2, 3]"),
    BadInput("empty_body", "no body at all", CHAT, raw=""),
    BadInput(
        "unknown_model",
        "a model the server does not serve",
        CHAT,
        lambda ctx: _chat(ctx, model=UNKNOWN_MODEL),
        expect=(404,),
    ),
    _bad_chat("model_wrong_type", "model is a number", model=123),
    _bad_chat("messages_missing", "no messages", messages=_DROP),
    _bad_chat("messages_not_list", "messages is a string", messages="hello"),
    _bad_chat("messages_empty", "an empty message list", messages=[]),
    _bad_chat("message_without_role", "a message without a role", messages=[{"content": "hi"}]),
    _bad_chat(
        "message_unknown_role",
        "a role OpenAI does not have",
        messages=[{"role": "wizard", "content": "hi"}],
    ),
    _bad_chat(
        "content_wrong_type", "content is a number", messages=[{"role": "user", "content": 42}]
    ),
    _bad_completion("prompt_missing", "a completion without a prompt", prompt=_DROP),
    _bad_completion("prompt_wrong_type", "prompt is an object", prompt={"text": "hi"}),
    _bad_chat("max_tokens_negative", "max_tokens = -1", max_tokens=-1),
    _bad_chat("max_tokens_string", "max_tokens is a string", max_tokens="ten"),
    _bad_chat("max_tokens_fraction", "max_tokens = 2.5", max_tokens=2.5),
    _bad_chat(
        "max_tokens_over_context",
        "max_tokens far above any context (OpenAI: 400)",
        strict=False,
        max_tokens=10**9,
    ),
    _bad_chat("temperature_negative", "temperature = -1", temperature=-1),
    _bad_chat(
        "temperature_over_2", "temperature = 5 (OpenAI: 0 to 2)", strict=False, temperature=5
    ),
    _bad_chat("temperature_string", "temperature is a string", temperature="hot"),
    _bad_chat("top_p_over_1", "top_p = 1.5", top_p=1.5),
    _bad_chat("top_p_negative", "top_p = -0.5", top_p=-0.5),
    _bad_chat("n_zero", "n = 0 choices", n=0),
    _bad_chat("stop_wrong_type", "stop is a number", stop=123),
    _bad_chat("stream_wrong_type", "stream is a string", stream="maybe"),
    _bad_chat("seed_wrong_type", "seed is a string", seed="abc"),
    _bad_chat(
        "presence_penalty_over_2",
        "presence_penalty = 5 (OpenAI: -2 to 2)",
        strict=False,
        presence_penalty=5,
    ),
    _bad_chat(
        "response_format_unknown",
        "an unknown response_format type",
        strict=False,
        response_format={"type": "bogus"},
    ),
    BadInput(
        "prompt_over_context",
        "a prompt longer than the context",
        COMPLETIONS,
        lambda ctx: _completion(ctx, prompt=filler_prompt((ctx.context_length or 0) + 64)),
        needs_context_length=True,
    ),
    BadInput(
        "oversized_body",
        "an 8 MiB body (a request size limit answers 413)",
        CHAT,
        lambda ctx: oversized("user", _chat(ctx)),
        expect=(413,),
        strict=False,
    ),
    BadInput(
        "unknown_route",
        "a route the API lacks",
        "/v1/no-such-route",
        {},
        expect=(404,),
        shape=False,
    ),
    BadInput("wrong_method", "GET on a POST route", CHAT, method="GET", expect=(405,), shape=False),
]


# ---- the dialect's own cases ---------------------------------------------------------------


def health(ctx: Context) -> Outcome:
    reply = ctx.send("GET", "/health", timeout_s=10)
    if reply.status is None:
        ctx.notes["unreachable"] = True
        return failed(f"no answer: {reply.exchange.answer}", reply.exchange)
    if reply.status != 200:
        return failed(f"GET /health answered {reply.status}", reply.exchange)
    body = first_line(reply.text, 60) or "an empty body"
    ctx.notes["server"] = {
        "health_body": body,
        "server_header": reply.exchange.headers.get("server"),
    }
    return passed(f"200 with {body}", reply.exchange)


def models(ctx: Context) -> Outcome:
    reply = ctx.send("GET", "/v1/models")
    data = reply.data
    if reply.status != 200 or not isinstance(data, dict):
        return failed(f"GET /v1/models answered {reply.status}", reply.exchange)
    items = data.get("data")
    if data.get("object") != "list" or not isinstance(items, list) or not items:
        return failed("not a list of models ('object': 'list', 'data': [...])", reply.exchange)
    ids = [m.get("id") for m in items if isinstance(m, dict)]
    if not all(isinstance(i, str) for i in ids):
        return failed("a model without a string 'id'", reply.exchange)
    if ctx.model is None:
        ctx.model = ids[0]
    elif ctx.model not in ids:
        return failed(f"{ctx.model!r} is not listed; the server lists {ids}", reply.exchange)
    card = next(m for m in items if m.get("id") == ctx.model)
    length = card.get("max_model_len") or card.get("context_length")
    if not isinstance(length, int):  # llama.cpp says it in /props: the context of one slot
        props = ctx.send("GET", "/props", timeout_s=10)
        settings = (
            props.data.get("default_generation_settings") if isinstance(props.data, dict) else None
        )
        length = (settings or {}).get("n_ctx")
    if ctx.context_length is None and isinstance(length, int):
        ctx.context_length = length
    ctx.notes.setdefault("server", {})["owned_by"] = card.get("owned_by")
    said = f"; context {length} tokens" if isinstance(length, int) else ""
    return passed(f"{len(ids)} model(s), using {ctx.model!r}{said}", reply.exchange)


def readiness(ctx: Context) -> Outcome:
    ready = ctx.send("GET", "/ready", timeout_s=10)
    reply = ctx.send("POST", COMPLETIONS, _completion(ctx, max_tokens=1, temperature=0))
    if reply.status != 200:
        return failed(
            f"a 1-token completion answered {reply.status}: {first_line(reply.exchange.answer)}",
            reply.exchange,
        )
    if ready.status == 200:
        return passed("GET /ready is 200 and a 1-token completion works", ready.exchange)
    return passed(
        f"a 1-token completion works; no readiness route apart from /health (GET /ready: "
        f"{ready.status})",
        reply.exchange,
    )


def _usage_problem(usage: Any, max_tokens: int | None = None) -> str | None:
    if not isinstance(usage, dict):
        return "no usage object"
    p, c, t = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not all(isinstance(v, int) for v in (p, c, t)):
        return f"usage counts are not integers: {usage}"
    assert isinstance(p, int) and isinstance(c, int) and isinstance(t, int)
    if p + c != t:
        return f"total_tokens {t} is not prompt {p} + completion {c}"
    if max_tokens is not None and c > max_tokens:
        return f"completion_tokens {c} exceeds max_tokens {max_tokens}"
    return None


def completion(ctx: Context) -> Outcome:
    reply = ctx.send("POST", COMPLETIONS, _completion(ctx, prompt=short_prompt(), temperature=0))
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    data = reply.data
    choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
    if not isinstance(choice.get("text"), str):
        return failed("choices[0].text is not a string", reply.exchange)
    if choice.get("finish_reason") not in ("stop", "length"):
        return failed(f"finish_reason {choice.get('finish_reason')!r}", reply.exchange)
    problem = _usage_problem(data.get("usage"), ctx.max_tokens)
    if problem:
        return failed(problem, reply.exchange)
    ctx.notes["completion_usage"] = data["usage"]
    return passed(
        f"text {choice['text'][:40]!r}..., finish_reason {choice['finish_reason']}", reply.exchange
    )


def chat(ctx: Context) -> Outcome:
    reply = ctx.send("POST", CHAT, _chat(ctx, temperature=0))
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    data = reply.data
    choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
    message = choice.get("message") or {}
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        return failed(f"message is {message!r}, not an assistant's text", reply.exchange)
    problem = _usage_problem(data.get("usage"), ctx.max_tokens)
    if problem:
        return failed(problem, reply.exchange)
    ctx.notes["chat_text"] = message["content"]
    ctx.notes["chat_usage"] = data["usage"]
    return passed(f"assistant: {message['content'][:40]!r}", reply.exchange)


def _stream_ends(stream: StreamReply) -> str | None:
    """Return what is wrong with how an OpenAI stream ends, or None."""
    if not stream.content_type.startswith("text/event-stream"):
        return f"content-type {stream.content_type!r}, not text/event-stream"
    if not stream.events:
        return "no events"
    if stream.events[-1] != "[DONE]":
        return "the stream does not end with `data: [DONE]`"
    finishes = [
        c.get("finish_reason")
        for e in stream.json_events
        for c in e.get("choices") or []
        if c.get("finish_reason")
    ]
    if not finishes:
        return "no chunk carries a finish_reason"
    if finishes[-1] not in ("stop", "length"):
        return f"finish_reason {finishes[-1]!r}"
    unparsable = [e for e in stream.json_events if "_unparsable" in e]
    if unparsable:
        return f"an event is not JSON: {unparsable[0]['_unparsable'][:60]}"
    return None


def chat_stream(ctx: Context) -> Outcome:
    stream = ctx.endpoint.stream(CHAT, _chat(ctx, temperature=0, stream=True))
    if stream.status != 200:
        return failed(f"{stream.status}: {first_line(stream.exchange.answer)}", stream.exchange)
    problem = _stream_ends(stream)
    if problem:
        return failed(problem, stream.exchange)
    first = next((e for e in stream.json_events if e.get("choices")), {})
    role = ((first.get("choices") or [{}])[0].get("delta") or {}).get("role")
    text = DIALECT.stream_text(stream)
    ctx.notes["chat_stream_text"] = text
    if role != "assistant":
        return warned(
            f"ends with [DONE]; the first delta has role {role!r}, not 'assistant'",
            stream.exchange,
        )
    return passed(
        f"{len(stream.events)} events ending in [DONE]; text {text[:30]!r}", stream.exchange
    )


def completion_stream(ctx: Context) -> Outcome:
    body = _completion(ctx, prompt=short_prompt(), temperature=0, stream=True)
    stream = ctx.endpoint.stream(COMPLETIONS, body)
    if stream.status != 200:
        return failed(f"{stream.status}: {first_line(stream.exchange.answer)}", stream.exchange)
    problem = _stream_ends(stream)
    if problem:
        return failed(problem, stream.exchange)
    return passed(f"{len(stream.events)} events ending in [DONE]", stream.exchange)


def stream_matches(ctx: Context) -> Outcome:
    whole, streamed = ctx.notes.get("chat_text"), ctx.notes.get("chat_stream_text")
    if whole is None or streamed is None:
        return skipped("chat or chat_stream failed")
    if whole != streamed:
        return warned(f"greedy text differs: streamed {streamed[:40]!r}, whole {whole[:40]!r}")
    return passed("the greedy text streamed equals the text answered whole")


def stream_usage(ctx: Context) -> Outcome:
    body = _chat(ctx, temperature=0, stream=True, stream_options={"include_usage": True})
    stream = ctx.endpoint.stream(CHAT, body)
    if stream.status != 200:
        return failed(f"{stream.status}: {first_line(stream.exchange.answer)}", stream.exchange)
    with_usage = [e for e in stream.json_events if e.get("usage")]
    if not with_usage:
        return failed("include_usage asked, but no chunk carries usage", stream.exchange)
    last = with_usage[-1]
    problem = _usage_problem(last["usage"], ctx.max_tokens)
    if problem:
        return failed(problem, stream.exchange)
    notes = []
    if last.get("choices"):
        notes.append("the usage chunk also has choices (OpenAI's has none)")
    if len(with_usage) > 1:
        notes.append(f"usage appears in {len(with_usage)} chunks, not only the last")
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    whole = ctx.notes.get("chat_usage")
    if whole and any(whole.get(k) != last["usage"].get(k) for k in counts):
        notes.append(f"counts differ from the same request answered whole ({whole})")
    if notes:
        return warned("; ".join(notes), stream.exchange, usage=last["usage"])
    return passed(f"last chunk: {last['usage']}", stream.exchange, usage=last["usage"])


def stream_usage_off(ctx: Context) -> Outcome:
    stream = ctx.endpoint.stream(CHAT, _chat(ctx, temperature=0, stream=True))
    if stream.status != 200:
        return failed(f"{stream.status}", stream.exchange)
    sent = [e for e in stream.json_events if e.get("usage")]
    if sent:
        return warned(
            f"usage sent in {len(sent)} chunk(s) though not asked (OpenAI sends it only with "
            "stream_options.include_usage)",
            stream.exchange,
        )
    return passed("no usage unless asked", stream.exchange)


def max_tokens(ctx: Context) -> Outcome:
    n = 3
    body = _completion(ctx, prompt=short_prompt(), temperature=0, max_tokens=n)
    reply = ctx.send("POST", COMPLETIONS, {**body, "ignore_eos": True})
    if reply.status in (400, 422):  # a server without vLLM's ignore_eos (transformers: 422)
        reply = ctx.send("POST", COMPLETIONS, body)
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    usage = reply.data.get("usage") or {}
    got = usage.get("completion_tokens")
    finish = reply.data["choices"][0].get("finish_reason")
    if not isinstance(got, int):
        return failed("no completion_tokens to compare with max_tokens", reply.exchange)
    if got > n:
        return failed(f"{got} tokens for max_tokens {n}", reply.exchange)
    if got == n and finish != "length":
        return failed(f"{n} tokens but finish_reason {finish!r}, not 'length'", reply.exchange)
    return passed(f"{got} token(s), finish_reason {finish}", reply.exchange)


def stop(ctx: Context) -> Outcome:
    body = _completion(ctx, prompt=short_prompt(), temperature=0, max_tokens=16)
    whole = ctx.send("POST", COMPLETIONS, body)
    if whole.status != 200:
        return failed(f"{whole.status}", whole.exchange)
    probe = pick_stop(whole.data["choices"][0]["text"])
    if probe is None:
        return skipped("the greedy answer has no word to stop at")
    reply = ctx.send("POST", COMPLETIONS, {**body, "stop": [probe.stop]})
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    choice = reply.data["choices"][0]
    text, finish = choice["text"], choice.get("finish_reason")
    if probe.stop in text:
        return failed(f"stop {probe.stop!r} is in the answer: {text!r}", reply.exchange)
    if finish != "stop":
        return failed(f"finish_reason {finish!r} after stopping, not 'stop'", reply.exchange)
    if text != probe.before:
        return warned(
            f"stopped, but the text {text!r} is not what came before {probe.stop!r} in the "
            f"greedy answer ({probe.before!r})",
            reply.exchange,
        )
    return passed(f"stopped before {probe.stop!r}, finish_reason stop", reply.exchange)


CASES = [
    Case("health", "health", "GET /health answers 200 (any body)", health),
    Case("models", "models", "GET /v1/models lists the served model", models),
    Case("readiness", "health", "a 1-token completion works (and /ready, if any)", readiness),
    Case("completion", "generation", "a completion: text, finish_reason, usage", completion),
    Case(
        "completion_stream",
        "streaming",
        "a streamed completion ends with [DONE]",
        completion_stream,
    ),
    Case("chat", "generation", "a chat answer: assistant text and usage", chat),
    Case("chat_stream", "streaming", "a streamed chat: role first, [DONE] last", chat_stream),
    Case(
        "stream_matches", "streaming", "greedy text is the same streamed or whole", stream_matches
    ),
    Case("stream_usage", "streaming", "include_usage: a last chunk with the usage", stream_usage),
    Case("stream_usage_off", "streaming", "no usage in a stream unless asked", stream_usage_off),
    Case("max_tokens", "generation", "max_tokens is honoured, finish_reason length", max_tokens),
    Case("stop", "generation", "a stop string ends the answer before it", stop),
]
