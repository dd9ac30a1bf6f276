"""The Ollama dialect's cases: /, /api/version, /api/tags, /api/generate and /api/chat.

The reference is Ollama's API documentation: errors are `{"error": "..."}` (400 for a bad
request, 404 for an unknown model); streams are on by default and are JSON lines
(application/x-ndjson), the last with `"done": true`, its `done_reason` and the counts
(`prompt_eval_count`, `eval_count`). Ollama has no /metrics.
"""

from __future__ import annotations

from typing import Any

from ._case import Case, Context, Outcome, failed, passed, skipped, warned
from ._http import StreamReply
from .common import BadInput, Dialect, Generation, first_line, oversized, pick_stop, short_prompt

GENERATE = "/api/generate"
CHAT = "/api/chat"
UNKNOWN_MODEL = "no-such-model-deploykit-check"


class OllamaDialect(Dialect):
    name = "ollama"
    health_path = "/api/version"
    error_shape_name = '{"error": "..."}'

    def generation(self, ctx: Context, max_tokens: int, stream: bool, prompt: str) -> Generation:
        body = {
            "model": ctx.model,
            "prompt": prompt,
            "stream": stream,
            "options": {"num_predict": max_tokens, "temperature": 0},
        }
        return Generation(GENERATE, body, ndjson=True)

    def text(self, data: Any) -> str:
        if not isinstance(data, dict):
            return ""
        return data.get("response") or (data.get("message") or {}).get("content") or ""

    def stream_text(self, reply: StreamReply) -> str:
        return "".join(self.text(e) for e in reply.json_events)

    def error_problem(self, data: Any) -> str | None:
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            return 'the body is not Ollama\'s {"error": "..."}'
        return None

    def ignore_eos(self, body: dict[str, Any]) -> dict[str, Any]:
        return body  # Ollama has no such option

    def bad_inputs(self) -> list[BadInput]:
        return BAD_INPUTS


DIALECT = OllamaDialect()


def _generate(ctx: Context, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ctx.model,
        "prompt": "Hello",
        "stream": False,
        "options": {"num_predict": 4},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


def _chat(ctx: Context, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ctx.model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": False,
        "options": {"num_predict": 4},
    }
    body.update(fields)
    return body


_DROP = object()


def _bad(name: str, doc: str, strict: bool = True, **fields: Any) -> BadInput:
    return BadInput(name, doc, GENERATE, lambda ctx: _generate(ctx, **fields), strict=strict)


def _bad_chat(name: str, doc: str, **fields: Any) -> BadInput:
    return BadInput(name, doc, CHAT, lambda ctx: _chat(ctx, **fields))


BAD_INPUTS = [
    BadInput("malformed_json", "a body that is not JSON", GENERATE, raw="{not json"),
    BadInput("body_not_object", "a JSON array", GENERATE, raw="[1, 2]"),
    BadInput("empty_body", "no body at all", GENERATE, raw=""),
    BadInput(
        "unknown_model",
        "a model the server does not have",
        GENERATE,
        lambda ctx: _generate(ctx, model=UNKNOWN_MODEL),
        expect=(404,),
    ),
    _bad("model_missing", "no model", model=_DROP),
    _bad("model_wrong_type", "model is a number", model=123),
    _bad("prompt_wrong_type", "prompt is a number", prompt=5),
    _bad("stream_wrong_type", "stream is a string", stream="maybe"),
    _bad("raw_wrong_type", "raw is a string", raw="maybe"),
    _bad("options_not_object", "options is a list", options=[]),
    _bad("num_predict_string", "num_predict is a string", options={"num_predict": "ten"}),
    _bad("temperature_string", "temperature is a string", options={"temperature": "hot"}),
    _bad("top_k_string", "top_k is a string", options={"top_k": "many"}),
    _bad("context_wrong_type", "context is a string", context="abc"),
    _bad("images_wrong_type", "images is a number", images=5),
    _bad("keep_alive_wrong", "keep_alive is not a duration", strict=False, keep_alive="forever"),
    _bad_chat("messages_not_list", "messages is a string", messages="hi"),
    _bad_chat(
        "message_unknown_role",
        "a role Ollama lacks",
        messages=[{"role": "wizard", "content": "hi"}],
    ),
    _bad_chat(
        "message_content_wrong_type",
        "content is a number",
        messages=[{"role": "user", "content": 42}],
    ),
    BadInput(
        "oversized_body",
        "an 8 MiB body (a request size limit answers 413)",
        GENERATE,
        lambda ctx: oversized("system", _generate(ctx)),
        expect=(413,),
        strict=False,
    ),
    BadInput(
        "unknown_route",
        "a route the API lacks",
        "/api/no-such-route",
        {},
        expect=(404,),
        shape=False,
    ),
    BadInput(
        "wrong_method", "GET on /api/generate", GENERATE, method="GET", expect=(405,), shape=False
    ),
]


# ---- the dialect's own cases ---------------------------------------------------------------


def health(ctx: Context) -> Outcome:
    version = ctx.send("GET", "/api/version", timeout_s=10)
    if version.status is None:
        ctx.notes["unreachable"] = True
        return failed(f"no answer: {version.exchange.answer}", version.exchange)
    if version.status != 200 or not isinstance(version.data, dict):
        return failed(f"GET /api/version answered {version.status}", version.exchange)
    ctx.notes["server"] = {"version": version.data.get("version")}
    root = ctx.send("GET", "/", timeout_s=10)
    if root.status != 200:
        return warned(
            f"/api/version answers, but GET / is {root.status} (Ollama answers 200 'Ollama is "
            "running' there, which Ollama deployments use as their health check)",
            root.exchange,
        )
    return passed(f"GET / is 200 ({first_line(root.text, 40)!r}), /api/version too", root.exchange)


def tags(ctx: Context) -> Outcome:
    reply = ctx.send("GET", "/api/tags")
    data = reply.data
    if reply.status != 200 or not isinstance(data, dict) or not data.get("models"):
        return failed(f"GET /api/tags answered {reply.status} without models", reply.exchange)
    names = [m.get("name") or m.get("model") for m in data["models"]]
    if ctx.model is None:
        ctx.model = names[0]
    elif ctx.model not in names and f"{ctx.model}:latest" not in names:
        return failed(f"{ctx.model!r} is not listed: {names}", reply.exchange)
    return passed(f"{len(names)} model(s), using {ctx.model!r}", reply.exchange)


def _done_problem(last: Any, max_new: int | None = None) -> str | None:
    if not isinstance(last, dict) or last.get("done") is not True:
        return 'the answer does not end with "done": true'
    if last.get("done_reason") not in ("stop", "length"):
        return f"done_reason {last.get('done_reason')!r}"
    count = last.get("eval_count")
    if not isinstance(count, int) or not isinstance(last.get("prompt_eval_count"), int):
        return "no eval_count / prompt_eval_count"
    if max_new is not None and count > max_new:
        return f"eval_count {count} for num_predict {max_new}"
    return None


def generate(ctx: Context) -> Outcome:
    body = _generate(ctx, prompt=short_prompt(), options={"num_predict": ctx.max_tokens})
    reply = ctx.send("POST", GENERATE, body)
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    problem = _done_problem(reply.data, ctx.max_tokens)
    if problem or not isinstance(reply.data.get("response"), str):
        return failed(problem or "no response text", reply.exchange)
    return passed(f"{reply.data['response'][:40]!r}, {reply.data['done_reason']}", reply.exchange)


def _stream_case(path: str, build) -> Any:
    def run(ctx: Context) -> Outcome:
        body = build(ctx)
        body.pop("stream")  # Ollama streams unless told not to
        stream = ctx.endpoint.stream(path, body, ndjson=True)
        if stream.status != 200:
            return failed(f"{stream.status}: {first_line(stream.exchange.answer)}", stream.exchange)
        if not stream.json_events:
            return failed("no JSON lines", stream.exchange)
        problem = _done_problem(stream.json_events[-1], ctx.max_tokens)
        if problem:
            return failed(problem, stream.exchange)
        if "ndjson" not in stream.content_type:
            return warned(
                f"content-type {stream.content_type!r}, not application/x-ndjson", stream.exchange
            )
        return passed(f"{len(stream.events)} JSON lines, the last done", stream.exchange)

    return run


def chat(ctx: Context) -> Outcome:
    reply = ctx.send("POST", CHAT, _chat(ctx, options={"num_predict": ctx.max_tokens}))
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    message = reply.data.get("message") or {}
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        return failed(f"message {message!r} is not an assistant's", reply.exchange)
    problem = _done_problem(reply.data, ctx.max_tokens)
    if problem:
        return failed(problem, reply.exchange)
    return passed(f"assistant: {message['content'][:40]!r}", reply.exchange)


def num_predict(ctx: Context) -> Outcome:
    # greedy, so that a second request with a larger budget continues the same answer
    def generate(limit: int):
        options = {"num_predict": limit, "temperature": 0}
        return ctx.send("POST", GENERATE, _generate(ctx, prompt=short_prompt(), options=options))

    reply = generate(3)
    if reply.status != 200:
        return failed(f"{reply.status}", reply.exchange)
    got, reason = reply.data.get("eval_count"), reply.data.get("done_reason")
    if not isinstance(got, int) or got > 3:
        return failed(f"eval_count {got!r} for num_predict 3", reply.exchange)
    if got == 3 and reason != "length":
        # the model may really have ended on its third token; if a larger budget goes on, the
        # server cut the answer at num_predict and called it 'stop'
        longer = generate(6)
        more = longer.data.get("eval_count") if longer.status == 200 else None
        if not isinstance(more, int) or more > 3:
            return failed(
                f"3 tokens but done_reason {reason!r}, and num_predict 6 gives {more!r}",
                reply.exchange,
            )
    return passed(f"{got} token(s), done_reason {reason}", reply.exchange)


def stop(ctx: Context) -> Outcome:
    options = {"num_predict": 16, "temperature": 0}
    whole = ctx.send("POST", GENERATE, _generate(ctx, prompt=short_prompt(), options=options))
    if whole.status != 200:
        return failed(f"{whole.status}", whole.exchange)
    probe = pick_stop(whole.data.get("response", ""))
    if probe is None:
        return skipped("the greedy answer has no word to stop at")
    body = _generate(ctx, prompt=short_prompt(), options={**options, "stop": [probe.stop]})
    reply = ctx.send("POST", GENERATE, body)
    if reply.status != 200:
        return failed(f"{reply.status}", reply.exchange)
    text = reply.data.get("response", "")
    if probe.stop in text:
        return failed(f"stop {probe.stop!r} is in the answer {text!r}", reply.exchange)
    if reply.data.get("done_reason") != "stop":
        return failed(f"done_reason {reply.data.get('done_reason')!r}", reply.exchange)
    return passed(f"stopped before {probe.stop!r}", reply.exchange)


CASES = [
    Case("health", "health", "GET / and /api/version answer 200", health),
    Case("tags", "models", "GET /api/tags lists the model", tags),
    Case("generate", "generation", "/api/generate whole: response, done, counts", generate),
    Case(
        "generate_stream",
        "streaming",
        "/api/generate streams JSON lines by default, the last done",
        _stream_case(GENERATE, lambda ctx: _generate(ctx, prompt=short_prompt())),
    ),
    Case("chat", "generation", "/api/chat whole: an assistant message", chat),
    Case(
        "chat_stream",
        "streaming",
        "/api/chat streams JSON lines, the last done",
        _stream_case(CHAT, lambda ctx: _chat(ctx)),
    ),
    Case("num_predict", "generation", "options.num_predict is honoured", num_predict),
    Case("stop", "generation", "options.stop ends the answer before it", stop),
]
