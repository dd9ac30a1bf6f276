"""Causes found by talking to a running server: each from a probe or its /metrics.

Every probe is a few requests, bounded in count and time, sent only to the endpoint:

- cold start: the same short request three times; the first much slower than the others;
- a buffering proxy: a streamed answer whose events all arrive together at the end;
- a chat-template mismatch: the server's rendering of a conversation (its /tokenize or
  /apply-template), or its greedy chat answer, against the model's own template;
- context exceeded: a request the caller gives, replayed once, and the numbers behind it;
- from /metrics: KV-cache preemptions, and prefill (time to first token) dominating latency;
- under load (opt-in): latency at concurrency 1 and 8 (batching off), and a burst that
  meets 429/503 (overload).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._http import Endpoint, Reply
from .diagnosis import Diagnosis

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PROBE_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TEMPLATE_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "[INST]",
    "[/INST]",
    "<|eot_id|>",
    "<|user|>",
    "<</SYS>>",
)


def _chat(model: str | None, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": PROBE_MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def _text(reply: Reply) -> str:
    try:
        choice = reply.data["choices"][0]
        return choice.get("message", {}).get("content") or choice.get("text") or ""
    except (KeyError, IndexError, TypeError):
        return ""


# ---- cold start ---------------------------------------------------------------------------


def cold_start(ep: Endpoint, model: str | None) -> tuple[Diagnosis | None, str, dict]:
    """Send the same short request three times; a first one far slower is a cold start."""
    times = []
    for _ in range(3):
        reply = ep.send("POST", CHAT, _chat(model, 4), timeout_s=max(ep.timeout_s, 120))
        if reply.status != 200:
            return None, f"cold start: not probed (a chat request answered {reply.status})", {}
        times.append(reply.exchange.elapsed_s)
    first, rest = times[0], statistics.median(times[1:])
    data = {"first_request_s": round(first, 3), "next_requests_s": [round(t, 3) for t in times[1:]]}
    seen = f"first request {first:.2f} s, then {times[1]:.2f} s and {times[2]:.2f} s"
    # slower by a factor and by a margin a person notices, so noise on a busy host is not it
    if first < 4 * rest or first - rest < 0.5:
        return None, seen, data
    return (
        Diagnosis(
            "cold_start",
            "The first request paid for a cold start",
            (seen, "the same request each time: what the first paid for was done once"),
            "Warm the server up before it takes traffic: send one short request after start "
            "and only then mark it ready (a readiness probe that runs a 1-token generation). "
            "Lazy loading (`transformers serve` loads a model on its first request), "
            "torch.compile and kernel autotuning all land on the first request otherwise; "
            "vLLM compiles and captures graphs at start, which is why its start is slow.",
        ),
        seen,
        data,
    )


# ---- a buffering proxy ----------------------------------------------------------------------


def buffered_stream(ep: Endpoint, model: str | None) -> tuple[Diagnosis | None, str, dict]:
    """Stream an answer; events that all arrive at the end show a buffer on the way."""
    body = _chat(model, 48, stream=True, ignore_eos=True)
    stream = ep.stream(CHAT, body)
    if stream.status == 400:
        stream = ep.stream(CHAT, {k: v for k, v in body.items() if k != "ignore_eos"})
    if stream.status != 200 or len(stream.events) < 8:
        return None, f"streaming: not probed ({stream.status}, {len(stream.events)} events)", {}
    times = stream.event_times_s
    first, last = times[0], times[-1]
    reads = len(stream.chunk_times_s)
    data = {
        "events": len(stream.events),
        "network_reads": reads,
        "first_event_s": round(first, 4),
        "last_event_s": round(last, 4),
        "stream_event_times_s": [round(x, 4) for x in times],
    }
    seen = (
        f"streaming: {len(stream.events)} events in {reads} network reads, first at "
        f"{first:.3f} s, last at {last:.3f} s"
    )
    # arriving as made: about one read per event, the first soon after the request; held by a
    # buffer: a few reads of many events each, the first late (a buffer may fill midway)
    if not (reads <= max(3, len(stream.events) // 8) and first >= 0.5 * last):
        return None, seen, data
    headers = stream.exchange.headers
    via = headers.get("server") or headers.get("via") or ""
    encoding = headers.get("content-encoding")
    evidence = [
        seen,
        "a server that streams sends each event as it is made; these came together after "
        "the whole answer was done",
        f"response headers: Server {via or 'none'}, Content-Encoding {encoding or 'none'}",
    ]
    if "nginx" in via.lower():
        fix = (
            "In the nginx location that proxies the API, set `proxy_buffering off;` (deploykit's "
            "nginx config does): nginx then passes each chunk on and flushes it, also through "
            "gzip. Buffered (nginx's default), chunks are not flushed, and gzip"
            + (" (on here)" if encoding else "")
            + " holds them until the answer ends. Or leave text/event-stream out of gzip_types, "
            "or have the server send `X-Accel-Buffering: no`."
        )
    else:
        fix = (
            "Turn off response buffering and compression of text/event-stream in the proxy or "
            "load balancer in front (nginx: `proxy_buffering off;`; or the header "
            "`X-Accel-Buffering: no`), and compare with the server reached directly."
        )
    return (
        Diagnosis(
            "buffered_stream",
            "The stream arrives all at once: something between client and server holds it",
            tuple(evidence),
            fix,
        ),
        seen,
        data,
    )


# ---- the chat template ----------------------------------------------------------------------


def model_template(model: str | None) -> tuple[str, str, str] | None:
    """Return (template, bos, eos) of a model deploykit can resolve here, else None."""
    if not model:
        return None
    try:
        from ..models import resolve_model

        source = resolve_model(model, progress=False)
    except Exception:
        return None
    folder = source.folder
    if folder is None:
        return None
    config = json.loads((folder / "tokenizer_config.json").read_text())
    jinja = folder / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    if not isinstance(template, str):
        return None

    def token(value: Any) -> str:
        return value.get("content", "") if isinstance(value, dict) else (value or "")

    return template, token(config.get("bos_token")), token(config.get("eos_token"))


def chat_template(ep: Endpoint, model: str | None) -> tuple[Diagnosis | None, str, dict]:
    """Compare the server's rendering of a conversation (or its answer) with the model's own."""
    from ..models.templates import render_chat_template

    found = model_template(model)
    if found is None:
        return None, f"chat template: not checked (the model {model!r} is not known here)", {}
    template, bos, eos = found
    ours = render_chat_template(template, PROBE_MESSAGES, bos_token=bos, eos_token=eos)
    applied = ep.send("POST", "/apply-template", {"messages": PROBE_MESSAGES}, timeout_s=10)
    theirs = (
        applied.data.get("prompt")
        if applied.status == 200 and isinstance(applied.data, dict)
        else None
    )
    how = "its /apply-template"
    if theirs is None:
        # vLLM's and deploykit's /tokenize take messages; compare token ids with the completion
        # of our rendering: the same prompt tokenized the server's way
        tok = ep.send(
            "POST", "/tokenize", {"model": model, "messages": PROBE_MESSAGES}, timeout_s=10
        )
        raw = ep.send(
            "POST",
            "/tokenize",
            {"model": model, "prompt": ours, "add_special_tokens": False},
            timeout_s=10,
        )
        if tok.status == 200 and raw.status == 200:
            a, b = tok.data.get("tokens"), raw.data.get("tokens")
            if a == b:
                return (
                    None,
                    "chat template: the server renders messages as the model's template does",
                    {},
                )
            return (
                _template_diagnosis(
                    f"its /tokenize gives {len(a or [])} tokens for the conversation, "
                    f"{len(b or [])} for the model's own rendering, and they differ",
                    ours,
                    None,
                ),
                "chat template: differs",
                {},
            )
        return _compare_answers(ep, model, ours)
    if theirs == ours:
        return None, f"chat template: {how} matches the model's own", {}
    return (
        _template_diagnosis(f"{how} renders the conversation differently", ours, theirs),
        "chat template: differs",
        {},
    )


def _compare_answers(
    ep: Endpoint, model: str | None, ours: str
) -> tuple[Diagnosis | None, str, dict]:
    chat = ep.send("POST", CHAT, _chat(model, 12))
    done = ep.send(
        "POST", COMPLETIONS, {"model": model, "prompt": ours, "max_tokens": 12, "temperature": 0}
    )
    if chat.status != 200 or done.status != 200:
        return None, "chat template: not checked (no rendering route, and a probe failed)", {}
    a, b = _text(chat), _text(done)
    leaked = [m for m in TEMPLATE_MARKERS if m in a]
    if a == b and not leaked:
        return None, "chat template: the greedy chat answer equals the model's own template's", {}
    evidence = f"greedy chat answer {a[:60]!r}; with the model's own template {b[:60]!r}"
    if leaked:
        evidence += f"; template markers in the answer: {leaked}"
    return _template_diagnosis(evidence, ours, None), "chat template: differs", {}


def _template_diagnosis(evidence: str, ours: str, theirs: str | None) -> Diagnosis:
    lines = [evidence, f"the model's own template gives {ours[:120]!r}"]
    if theirs is not None:
        lines.append(f"the server's gives {theirs[:120]!r}")
    return Diagnosis(
        "chat_template_mismatch",
        "The server formats chats with a template that is not the model's",
        tuple(lines),
        "Serve with the model's own chat template: llama.cpp reads it from the GGUF (drop "
        "--chat-template, or give the model's file); vLLM and transformers read "
        "tokenizer_config.json or chat_template.jinja (pass --chat-template only for models "
        "without one); for Ollama, write the Modelfile's TEMPLATE from the model's template "
        "(dk.write_modelfile converts it). A wrong template makes a good model answer nonsense.",
    )


# ---- context exceeded -----------------------------------------------------------------------

_CONTEXT_WORDS = re.compile(r"context|maximum|too long|exceed|max_model_len|n_ctx|tokens", re.I)


def context_exceeded(
    ep: Endpoint, request: dict[str, Any], context_length: int | None
) -> tuple[Diagnosis | None, str, dict]:
    """Replay a request the caller says fails; explain a context overflow with its numbers."""
    path = CHAT if "messages" in request else COMPLETIONS
    reply = ep.send("POST", path, request)
    message = ""
    if isinstance(reply.data, dict):
        err = reply.data.get("error")
        message = (
            err.get("message", "")
            if isinstance(err, dict)
            else str(err or reply.data.get("detail", ""))
        )
    seen = f"the given request: {reply.status} {message[:120]}"
    if reply.status == 200 or not _CONTEXT_WORDS.search(message):
        return None, seen, {}
    tok_body = {k: request[k] for k in ("model", "messages", "prompt") if k in request}
    tok = ep.send("POST", "/tokenize", tok_body, timeout_s=10)
    prompt_tokens = (
        tok.data.get("count") if tok.status == 200 and isinstance(tok.data, dict) else None
    )
    if prompt_tokens is None:
        numbers = [int(n) for n in re.findall(r"\d+", message)]
        prompt_tokens = numbers[0] if numbers else None
    asked = request.get("max_tokens") or request.get("max_completion_tokens")
    evidence = [seen]
    if prompt_tokens is not None and context_length:
        evidence.append(
            f"prompt {prompt_tokens:,} tokens + max_tokens {asked or 'unset'} against a context of "
            f"{context_length:,}"
        )
    room = context_length - prompt_tokens if prompt_tokens is not None and context_length else None
    if room is not None and room > 0:
        fix = (
            f"Ask for at most {room:,} new tokens (max_tokens), or shorten the prompt (keep its "
            "end: the latest turns matter most)"
        )
    else:
        fix = "Shorten the prompt below the context (keep its end: the latest turns matter most)"
    fix += (
        ", or serve the model with a longer context if it was trained for one (vLLM "
        "--max-model-len, llama.cpp ctx_size per slot); a longer context costs KV-cache memory: "
        "dk.memory_plan says how much."
    )
    return (
        Diagnosis(
            "context_exceeded", "The request does not fit the model's context", tuple(evidence), fix
        ),
        seen,
        {"prompt_tokens": prompt_tokens, "context_length": context_length, "room_tokens": room},
    )


# ---- /metrics -------------------------------------------------------------------------------


def read_metrics(ep: Endpoint):
    """Return the parsed /metrics page and the engine's prefix, or (None, None)."""
    from ..monitor.scrape import parse_metrics

    reply = ep.send("GET", "/metrics", timeout_s=10)
    if reply.status != 200:
        return None, None
    try:
        metrics = parse_metrics(reply.text)
    except Exception:
        return None, None
    names = metrics.names()
    for prefix in ("vllm:", "deploykit:", "llamacpp:", "tgi_"):
        if any(n.startswith(prefix) for n in names):
            return metrics, prefix
    return metrics, None


def preemptions(before, after, prefix: str | None, window: str) -> tuple[Diagnosis | None, str]:
    """Return a diagnosis when the KV cache preempted requests in the window (vLLM's counter)."""
    if after is None or prefix != "vllm:":
        return None, "preemptions: no vLLM counter to read"
    count = _since(after, before, "vllm:num_preemptions") or 0.0
    usage = after.get("vllm:kv_cache_usage_perc")
    seen = f"vllm:num_preemptions_total grew by {count:g} {window}"
    if count <= 0:
        return None, seen
    return (
        Diagnosis(
            "kv_preemption",
            "Requests are preempted: the KV cache is too small for the sequences admitted",
            (
                seen,
                f"KV-cache usage now {usage:.0%}" if usage is not None else "no KV usage gauge",
                "a preempted request loses its cache and is recomputed later: its latency grows "
                "and the work is done twice",
            ),
            "Give the KV cache more room (vLLM-CPU VLLM_CPU_KVCACHE_SPACE or kv_cache_memory_bytes; "
            "GPU --gpu-memory-utilization), or admit fewer sequences at once (--max-num-seqs) "
            "so that those admitted fit; dk.memory_plan says how many fit.",
        ),
        seen,
    )


def _since(after, before, name: str) -> float | None:
    """Return a counter's (or histogram part's) growth since before (its value without one)."""
    value = after.get(name)
    if value is None:
        return None
    return value - ((before.get(name, 0.0) or 0.0) if before is not None else 0.0)


def long_prompts(metrics, prefix: str | None, before=None) -> tuple[Diagnosis | None, str]:
    """Return a diagnosis when prefill (time to first token) is most of each request's time.

    Read since the `before` scrape when given (the traffic of interest), else since start.
    """
    if metrics is None or prefix not in ("vllm:", "deploykit:"):
        return None, "prefill share: no vLLM-style histograms to read"
    e2e_name = f"{prefix}e2e_request_latency_seconds"
    ttft_name = f"{prefix}time_to_first_token_seconds"
    figures = {
        key: _since(metrics, before, name)
        for key, name in (
            ("ttft_sum", f"{ttft_name}_sum"),
            ("ttft_count", f"{ttft_name}_count"),
            ("e2e_sum", f"{e2e_name}_sum"),
            ("requests", f"{e2e_name}_count"),
            ("prompt", f"{prefix}prompt_tokens"),
            ("generated", f"{prefix}generation_tokens"),
        )
    }
    if (
        any(v is None for v in figures.values())
        or not figures["requests"]
        or not figures["ttft_count"]
    ):
        return None, "prefill share: no requests served in the window"
    f = {k: float(v or 0.0) for k, v in figures.items()}
    ttft, e2e = f["ttft_sum"] / f["ttft_count"], f["e2e_sum"] / f["requests"]
    per_prompt, per_output = f["prompt"] / f["requests"], f["generated"] / f["requests"]
    share = ttft / e2e if e2e else 0.0
    seen = (
        f"{f['requests']:.0f} requests{' since the snapshot' if before is not None else ''}: on "
        f"average {per_prompt:.0f} prompt tokens, {per_output:.0f} generated; time to first "
        f"token {ttft:.3f} s of {e2e:.3f} s ({share:.0%})"
    )
    if share < 0.5 or per_prompt < 4 * max(per_output, 1):
        return None, seen
    return (
        Diagnosis(
            "long_prompts",
            "Long prompts dominate: most of each request's time is prefill",
            (seen, "the time to first token grows with the prompt, not with the answer"),
            "Send shorter prompts (trim history and retrieved text to what the answer needs), "
            "put the part shared by many requests first so a prefix cache serves it (vLLM "
            "--enable-prefix-caching, on by default in V1), and let chunked prefill interleave "
            "long prompts with other requests' decoding (vLLM --max-num-batched-tokens).",
        ),
        seen,
    )


# ---- under load (opt-in) --------------------------------------------------------------------


# a server that batches answers `concurrency` requests at once at least this much faster than
# one at a time; one that serves them one at a time is near 1x
_BATCHING_SPEEDUP = 1.6
_BATCHING_ROUNDS = 2


def _timed_batch(
    ep: Endpoint, body: dict[str, Any], n: int, at_once: int
) -> tuple[float, list[Reply]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        replies = list(pool.map(lambda _: ep.send("POST", COMPLETIONS, body), range(n)))
    return time.perf_counter() - start, replies


def batching(
    ep: Endpoint, model: str | None, engine: str | None, concurrency: int = 8
) -> tuple[Diagnosis | None, str, dict]:
    """Time the same requests one at a time and `concurrency` at a time."""
    # answers long enough that decoding, not HTTP, is most of each request's time
    body = {
        "model": model,
        "prompt": "The quick brown fox",
        "max_tokens": 32,
        "temperature": 0,
        "ignore_eos": True,
    }
    one = ep.send("POST", COMPLETIONS, body)
    if one.status == 400:
        body.pop("ignore_eos")
        one = ep.send("POST", COMPLETIONS, body)
    if one.status != 200:
        return None, f"batching: not probed ({one.status})", {}
    # untimed: an engine's first batch of a new size can build kernels for its shapes once
    _timed_batch(ep, body, concurrency, concurrency)
    # a second round before naming a cause: a server that batches can lose one round to a
    # neighbour's burst of work on a shared machine; one that does not is slow in both
    speedups: list[float] = []
    for _ in range(_BATCHING_ROUNDS):
        serial_s, a = _timed_batch(ep, body, concurrency, 1)
        parallel_s, b = _timed_batch(ep, body, concurrency, concurrency)
        ok = sum(r.status == 200 for r in a + b)
        speedup = serial_s / parallel_s if parallel_s else 0.0
        speedups.append(round(speedup, 2))
        # not timed fairly when some failed: batching is not what to name then
        fine = speedup >= _BATCHING_SPEEDUP or ok < 2 * concurrency
        if fine:
            break
    data = {
        "serial_s": round(serial_s, 3),
        "concurrent_s": round(parallel_s, 3),
        "speedup": round(speedup, 2),
        "speedups": speedups,
    }
    seen = (
        f"{concurrency} requests one at a time took {serial_s:.2f} s, {concurrency} at once "
        f"{parallel_s:.2f} s ({speedup:.2f}x), {ok} of {2 * concurrency} answered"
    )
    if fine:
        return None, seen, data
    knob = {
        "deploykit:": "start `deploykit serve` with --max-batch-size above 1, and not --naive",
        "vllm:": "raise --max-num-seqs (vLLM always batches continuously; there is no switch "
        "to turn on, so the seed's 'enable vLLM batching' has nothing to enable)",
        "llamacpp:": "start llama.cpp with more slots (--parallel N, LlamaCppArgs(n_parallel=N)); "
        "ctx_size is split over them",
    }.get(
        engine or "",
        "raise the engine's batch size (vLLM --max-num-seqs, llama.cpp --parallel, "
        "TGI --max-batch-total-tokens, Ollama OLLAMA_NUM_PARALLEL, deploykit --max-batch-size)",
    )
    return (
        Diagnosis(
            "batching_off",
            "Requests are served one at a time: latency grows with every request waiting",
            (
                seen,
                f"{len(speedups)} rounds, each under {_BATCHING_SPEEDUP}x: "
                + ", ".join(f"{x:.2f}x" for x in speedups),
                "a server that batches answers several requests in little more than one's time",
            ),
            f"Let the engine decode several requests together: {knob}.",
        ),
        seen,
        data,
    )


def overload(
    ep: Endpoint, model: str | None, burst: int = 24
) -> tuple[Diagnosis | None, str, dict]:
    """Send a bounded burst at once; 429/503 answers show the server shedding load."""
    body = {"model": model, "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0}
    _, replies = _timed_batch(ep, body, burst, burst)
    shed = [r for r in replies if r.status in (429, 503)]
    statuses: dict[str, int] = {}
    for r in replies:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    seen = f"a burst of {burst} requests at once: statuses {statuses}"
    data = {"burst": burst, "statuses": statuses}
    if not shed:
        return None, seen, data
    retry = sorted({h for r in shed if (h := r.exchange.headers.get("retry-after"))})
    return (
        Diagnosis(
            "overloaded",
            f"The server sheds load: {len(shed)} of {burst} requests got {shed[0].status}",
            (
                seen,
                f"Retry-After: {', '.join(retry)} s" if retry else "no Retry-After header",
                "a 429/503 with Retry-After is the server protecting its latency: its queue is full",
            ),
            "Clients must retry 429 and 503 after Retry-After, with backoff and jitter "
            "(dk.ResilientClient does); and capacity must meet the load: more replicas behind a "
            "balancer, or a longer queue where the latency budget allows (deploykit serve "
            "--max-waiting, TGI --max-concurrent-requests).",
        ),
        seen,
        data,
    )
