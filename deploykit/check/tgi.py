"""The TGI dialect's cases: /health, /info, /generate, /generate_stream, the root route, and the
OpenAI-style chat route as TGI's clients call it.

The reference is Hugging Face TGI's router: errors are `{"error", "error_type"}`, 422 for
input validation; a stream is SSE events each with one `token`, the last also with
`generated_text` and `details`. TGI ignores the "model" of a chat request, so its clients
send a placeholder: "tgi" (TGI's documentation, OpenAI clients pointed at TGI) or "dummy"
(huggingface_hub's InferenceClient given a URL). A server standing in for TGI must accept
both.
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

GENERATE = "/generate"
STREAM = "/generate_stream"
CHAT = "/v1/chat/completions"
PLACEHOLDERS = {"tgi": "TGI's documented placeholder", "dummy": "huggingface_hub's InferenceClient"}


class TGIDialect(Dialect):
    name = "tgi"
    error_shape_name = '{"error", "error_type"}'

    def generation(self, ctx: Context, max_tokens: int, stream: bool, prompt: str) -> Generation:
        params = {"max_new_tokens": max_tokens, "do_sample": False}
        return Generation(STREAM if stream else GENERATE, {"inputs": prompt, "parameters": params})

    def text(self, data: Any) -> str:
        return data.get("generated_text", "") if isinstance(data, dict) else ""

    def stream_text(self, reply: StreamReply) -> str:
        return "".join((e.get("token") or {}).get("text", "") for e in reply.json_events)

    def error_problem(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return "the body is not JSON"
        if not isinstance(data.get("error"), str) or not isinstance(data.get("error_type"), str):
            keys = ", ".join(sorted(data)) or "nothing"
            return f"the body has {keys}, not TGI's error and error_type"
        return None

    def ignore_eos(self, body: dict[str, Any]) -> dict[str, Any]:
        return body  # TGI has no such parameter; the long answer may end early

    def bad_inputs(self) -> list[BadInput]:
        return BAD_INPUTS


DIALECT = TGIDialect()


def _gen(**params: Any) -> dict[str, Any]:
    return {"inputs": "Hello", "parameters": {"max_new_tokens": 4, **params}}


def _bad(name: str, doc: str, body: Any, strict: bool = True, path: str = GENERATE) -> BadInput:
    return BadInput(name, doc, path, body, expect=(422,), strict=strict)


BAD_INPUTS = [
    BadInput("malformed_json", "a body that is not JSON", GENERATE, raw="{not json", expect=(422,)),
    BadInput("body_not_object", "a JSON array", GENERATE, raw="[1, 2]", expect=(422,)),
    BadInput("empty_body", "no body at all", GENERATE, raw="", expect=(422,)),
    _bad("inputs_missing", "no inputs", {"parameters": {"max_new_tokens": 4}}),
    _bad("inputs_wrong_type", "inputs is a number", {"inputs": 5}),
    _bad("inputs_empty", "inputs is empty", {"inputs": ""}),
    _bad("parameters_not_object", "parameters is a string", {"inputs": "hi", "parameters": "x"}),
    _bad("max_new_tokens_zero", "max_new_tokens = 0", _gen(max_new_tokens=0)),
    _bad("max_new_tokens_string", "max_new_tokens is a string", _gen(max_new_tokens="ten")),
    _bad("temperature_zero", "temperature = 0 (TGI: > 0)", _gen(temperature=0.0)),
    _bad("temperature_string", "temperature is a string", _gen(temperature="hot")),
    _bad("top_p_one", "top_p = 1.0 (TGI: < 1)", _gen(top_p=1.0)),
    _bad("top_p_negative", "top_p = -0.5", _gen(top_p=-0.5)),
    _bad("top_k_zero", "top_k = 0", _gen(top_k=0)),
    _bad("repetition_penalty_zero", "repetition_penalty = 0", _gen(repetition_penalty=0.0)),
    _bad("too_many_stops", "5 stop sequences (TGI's default limit: 4)", _gen(stop=list("abcde"))),
    _bad("truncate_zero", "truncate = 0", _gen(truncate=0)),
    _bad("seed_negative", "seed = -1", _gen(seed=-1)),
    _bad("best_of_zero", "best_of = 0", _gen(best_of=0)),
    _bad(
        "max_new_tokens_over_context",
        "max_new_tokens far above the context",
        _gen(max_new_tokens=10**9),
    ),
    BadInput(
        "inputs_over_context",
        "inputs longer than max_input_tokens",
        GENERATE,
        lambda ctx: {
            "inputs": filler_prompt((ctx.context_length or 0) + 64),
            "parameters": {"max_new_tokens": 1},
        },
        expect=(422,),
        needs_context_length=True,
    ),
    _bad("stream_inputs_wrong_type", "inputs is a number, streamed", {"inputs": 5}, path=STREAM),
    BadInput(
        "oversized_body",
        "an 8 MiB body (a request size limit answers 413)",
        GENERATE,
        oversized("padding", _gen()),
        expect=(413,),
        strict=False,
    ),
    BadInput(
        "wrong_method", "GET on /generate", GENERATE, method="GET", expect=(405,), shape=False
    ),
]


# ---- the dialect's own cases ---------------------------------------------------------------


def health(ctx: Context) -> Outcome:
    reply = ctx.send("GET", "/health", timeout_s=10)
    if reply.status is None:
        ctx.notes["unreachable"] = True
        return failed(f"no answer: {reply.exchange.answer}", reply.exchange)
    if reply.status != 200:
        return failed(f"GET /health answered {reply.status}", reply.exchange)
    return passed("200", reply.exchange)


def info(ctx: Context) -> Outcome:
    reply = ctx.send("GET", "/info")
    data = reply.data
    if reply.status != 200 or not isinstance(data, dict):
        return failed(f"GET /info answered {reply.status}", reply.exchange)
    missing = [k for k in ("model_id", "max_total_tokens") if k not in data]
    if missing:
        return failed(f"/info lacks {missing}", reply.exchange)
    ctx.model = ctx.model or data["model_id"]
    inputs = data.get("max_input_tokens") or data.get("max_input_length")
    if ctx.context_length is None and isinstance(inputs, int):
        ctx.context_length = inputs
    ctx.notes["server"] = {k: data.get(k) for k in ("model_id", "version", "router")}
    return passed(
        f"model {data['model_id']!r}, max_total_tokens {data['max_total_tokens']}", reply.exchange
    )


def _details_problem(details: Any, max_new: int) -> str | None:
    if not isinstance(details, dict):
        return "no details"
    if details.get("finish_reason") not in ("length", "eos_token", "stop_sequence"):
        return f"finish_reason {details.get('finish_reason')!r}"
    tokens = details.get("generated_tokens")
    if not isinstance(tokens, int) or tokens > max_new:
        return f"generated_tokens {tokens!r} for max_new_tokens {max_new}"
    return None


def generate(ctx: Context) -> Outcome:
    body = {
        "inputs": short_prompt(),
        "parameters": {"max_new_tokens": ctx.max_tokens, "details": True},
    }
    reply = ctx.send("POST", GENERATE, body)
    if reply.status != 200:
        return failed(f"{reply.status}: {first_line(reply.exchange.answer)}", reply.exchange)
    data = reply.data
    if not isinstance(data, dict) or not isinstance(data.get("generated_text"), str):
        return failed("no generated_text", reply.exchange)
    problem = _details_problem(data.get("details"), ctx.max_tokens)
    if problem:
        return failed(problem, reply.exchange)
    ctx.notes["generated_text"] = data["generated_text"]
    return passed(
        f"{data['generated_text'][:40]!r}, {data['details']['generated_tokens']} tokens",
        reply.exchange,
    )


def _stream_problem(stream: StreamReply, max_new: int) -> str | None:
    events = stream.json_events
    if not stream.content_type.startswith("text/event-stream"):
        return f"content-type {stream.content_type!r}, not text/event-stream"
    if not events:
        return "no events"
    if not all(isinstance(e.get("token"), dict) for e in events):
        return "an event without a token"
    last = events[-1]
    if not isinstance(last.get("generated_text"), str):
        return "the last event has no generated_text"
    return _details_problem(last.get("details"), max_new)


def generate_stream(ctx: Context) -> Outcome:
    body = {
        "inputs": short_prompt(),
        "parameters": {"max_new_tokens": ctx.max_tokens, "details": True},
    }
    stream = ctx.endpoint.stream(STREAM, body)
    if stream.status != 200:
        return failed(f"{stream.status}: {first_line(stream.exchange.answer)}", stream.exchange)
    problem = _stream_problem(stream, ctx.max_tokens)
    if problem:
        return failed(problem, stream.exchange)
    text = DIALECT.stream_text(stream)
    whole = ctx.notes.get("generated_text")
    if whole is not None and text != whole:
        return warned(f"streamed {text!r} differs from the whole answer {whole!r}", stream.exchange)
    return passed(f"{len(stream.events)} token events, the last with details", stream.exchange)


def root_route(ctx: Context) -> Outcome:
    body = {"inputs": short_prompt(), "parameters": {"max_new_tokens": 4}}
    reply = ctx.send("POST", "/", body)
    if reply.status != 200:
        return failed(f"POST / answered {reply.status}", reply.exchange)
    data = reply.data
    item = data[0] if isinstance(data, list) and data else data
    if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
        return failed("POST / gave no generated_text", reply.exchange)
    stream = ctx.endpoint.stream("/", {**body, "stream": True})
    if stream.status != 200 or _stream_problem(stream, 4) not in (None, "no details"):
        return failed(
            f'POST / with "stream": true: {stream.status} {_stream_problem(stream, 4)}',
            stream.exchange,
        )
    return passed("POST / answers whole and streamed (what text_generation calls)", reply.exchange)


def max_new_tokens(ctx: Context) -> Outcome:
    body = {"inputs": short_prompt(), "parameters": {"max_new_tokens": 3, "details": True}}
    reply = ctx.send("POST", GENERATE, body)
    if reply.status != 200:
        return failed(f"{reply.status}", reply.exchange)
    details = reply.data.get("details") or {}
    got, finish = details.get("generated_tokens"), details.get("finish_reason")
    if not isinstance(got, int) or got > 3:
        return failed(f"generated_tokens {got!r} for max_new_tokens 3", reply.exchange)
    if got == 3 and finish != "length":
        return failed(f"3 tokens but finish_reason {finish!r}", reply.exchange)
    return passed(f"{got} token(s), finish_reason {finish}", reply.exchange)


def stop(ctx: Context) -> Outcome:
    body: dict[str, Any] = {"inputs": short_prompt(), "parameters": {"max_new_tokens": 16}}
    whole = ctx.send("POST", GENERATE, body)
    if whole.status != 200:
        return failed(f"{whole.status}", whole.exchange)
    probe = pick_stop(whole.data["generated_text"])
    if probe is None:
        return skipped("the greedy answer has no word to stop at")
    params = {"max_new_tokens": 16, "stop": [probe.stop], "details": True}
    reply = ctx.send("POST", GENERATE, {"inputs": short_prompt(), "parameters": params})
    if reply.status != 200:
        return failed(f"{reply.status}", reply.exchange)
    text = reply.data["generated_text"]
    finish = (reply.data.get("details") or {}).get("finish_reason")
    if finish != "stop_sequence":
        return failed(f"finish_reason {finish!r}, not stop_sequence", reply.exchange)
    if not text.startswith(probe.before):
        return failed(f"{text!r} is not the greedy answer up to {probe.stop!r}", reply.exchange)
    kept = "keeps" if text.endswith(probe.stop) else "drops"
    return passed(f"stopped at {probe.stop!r} ({kept} it), stop_sequence", reply.exchange)


def _placeholder_case(name: str) -> Case:
    def run(ctx: Context) -> Outcome:
        body = {
            "model": name,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": ctx.max_tokens,
        }
        reply = ctx.send("POST", CHAT, body)
        if reply.status != 200:
            return failed(
                f'"model": "{name}" ({PLACEHOLDERS[name]}) answered {reply.status}: TGI accepts '
                f"any name there, so a client moving from TGI breaks on its first chat call",
                reply.exchange,
            )
        stream = ctx.endpoint.stream(CHAT, {**body, "stream": True})
        if stream.status != 200 or not stream.events or stream.events[-1] != "[DONE]":
            return failed(f"streamed, {stream.status}, no [DONE] at the end", stream.exchange)
        return passed(f'"model": "{name}" accepted, whole and streamed', reply.exchange)

    return Case(
        f"chat_model_{name}",
        "generation",
        f'/v1/chat/completions with "model": "{name}" ({PLACEHOLDERS[name]})',
        run,
    )


CASES = [
    Case("health", "health", "GET /health answers 200", health),
    Case("info", "models", "GET /info names the model and its token limits", info),
    Case("generate", "generation", "POST /generate: generated_text and details", generate),
    Case("generate_stream", "streaming", "token events, the last with details", generate_stream),
    Case("root_route", "generation", "POST / whole and streamed (text_generation)", root_route),
    Case("max_new_tokens", "generation", "max_new_tokens is honoured", max_new_tokens),
    Case("stop", "generation", "a stop sequence ends the answer", stop),
    _placeholder_case("tgi"),
    _placeholder_case("dummy"),
]
