"""`deploykit bench --url`: load any OpenAI-compatible endpoint as `vllm bench serve` does.

    deploykit bench --url http://127.0.0.1:8000 --concurrency 1,8,32 --num-prompts 64 \\
        --input-tokens 256 --output-tokens 128 --result-dir results/

Each load level (a concurrency: closed loop; or a request rate: open-loop Poisson or
gamma arrivals) first sends warm-up requests, then num_prompts streamed requests of
seeded synthetic prompts, all awaited, through `loadgen`; `metrics` turns them into
vLLM's result fields (TTFT, TPOT, ITL, E2EL, throughputs, goodput). Every request of a
sweep has its own prompt, so a prefix cache cannot answer one level from the previous
one. Works against deploykit, vLLM, llama.cpp, `transformers serve` or a hosted API.

It starts no servers (the `bench servers|vllm|llamacpp` benchmarks do), and it sends no
load before its arguments and the endpoint check have passed.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._conditions import cpu_name, gpu_names, load_average, package_versions
from .._urls import check_http_url
from ..errors import EndpointUnreachableError, InvalidArgumentError
from .loadgen import LoadSpec, check_load, run_load
from .metrics import METRICS, check_slo

# The fields of each result, named as in vLLM's `vllm bench serve --save-result
# --save-detailed` JSON (p99 stands for every percentile asked for).
RESULT_FIELDS = (
    "date",
    "endpoint_type",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "num_prompts",
    "request_rate",
    "burstiness",
    "max_concurrency",
    "duration",
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "errors",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
    *(f"{stat}_{m}_ms" for m in METRICS for stat in ("mean", "median", "std", "p99")),
)
# ...and what deploykit adds: the load's settings and the machine it ran on
EXTRA_FIELDS = (
    "input_len",
    "output_len",
    "num_warmups",
    "seed",
    "ignore_eos",
    "stream",
    "keep_alive",
    "endpoint",
    "prompt_source",
    "environment",
)
# common English words, about one token each: prompts when no tokenizer is at hand
_WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are "
    "which this be or has had not but also have one their its new after who first two "
    "they been more other into all time than over when year only most some would made "
    "city during world up about between then him both there where may state many such "
    "these under out part known later people use them three well while through before "
    "since each early used so any long what off game work back high"
).split()


@dataclass(frozen=True)
class Prompts:
    """Synthetic prompts and how they were made."""

    texts: tuple[str, ...]
    token_counts: tuple[int, ...] | None  # None: no tokenizer, the server's usage tells
    tokenizer_id: str | None
    source: str  # one line for the result: how the prompts were made


@functools.lru_cache(maxsize=8)  # a sweep over several servers loads each tokenizer once
def _tokenizer(name: str | None):
    """Return (tokenizer, its id) for a built-in name, local folder or hub id; (None, why) if none."""
    if not name:
        return None, "no model or tokenizer named"
    from ..models import BUILTIN_MODELS, resolve_model

    try:
        source = (
            resolve_model(name, progress=False)
            if name in BUILTIN_MODELS
            or Path(name).expanduser().is_dir()
            or re.fullmatch(r"[\w.-]+/[\w.-]+", name)
            else None
        )
    except Exception as exc:
        return None, f"{name!r} did not resolve ({type(exc).__name__})"
    if source is None:
        return None, f"{name!r} is not a built-in name, a local model folder or a hub id"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source.location), source.location
    except Exception as exc:
        return None, f"no tokenizer loaded for {name!r} ({type(exc).__name__})"


def synthetic_prompts(
    num_prompts: int, input_tokens: int, tokenizer: str | None = None, seed: int = 0
) -> Prompts:
    """Return num_prompts seeded random prompts of input_tokens tokens each.

    With a tokenizer (a built-in name, local folder or hub id), prompts are random
    non-special token ids, decoded and re-encoded until they are exactly input_tokens
    tokens long with the tokenizer's special tokens, as vLLM's random dataset makes them; a
    draw whose text does not settle at that length is drawn again (vLLM keeps it), and a
    prompt still off after every draw is named in `source`.
    Without one, they are input_tokens common words each, and the input lengths come from
    the server's usage.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    tok, tok_id = _tokenizer(tokenizer)
    if tok is None:
        words = tuple(" ".join(rng.choice(_WORDS, input_tokens)) for _ in range(num_prompts))
        return Prompts(
            words,
            None,
            None,
            f"{input_tokens} random common words each ({tok_id}); input_lens "
            "from the server's usage, else the word count",
        )
    special = set(tok.all_special_ids)
    allowed = np.array([i for i in range(tok.vocab_size) if i not in special])
    target = max(1, input_tokens - tok.num_special_tokens_to_add())
    texts: list[str] = []
    counts: list[int] = []
    for _ in range(num_prompts):
        for _ in range(_DRAWS):
            text = _decoded_to_length(
                tok, [int(i) for i in rng.choice(allowed, target)], allowed, rng
            )
            if len(tok(text, add_special_tokens=False).input_ids) == target:
                break
        texts.append(text)
        counts.append(len(tok(text).input_ids))
    missed = sum(c != input_tokens for c in counts)
    return Prompts(
        tuple(texts),
        tuple(counts),
        tok_id,
        f"random token ids of {tok_id}, decoded; seed {seed}"
        + (f"; {missed} of {num_prompts} not {input_tokens} tokens long" if missed else ""),
    )


# Fresh draws of one prompt before its length is left as it came out: a draw misses when its
# bytes never settle (a byte-level token cut from its character decodes to U+FFFD, which
# re-encodes to three tokens, and a truncation makes another).
_DRAWS = 20


def _decoded_to_length(tok, ids: list[int], allowed, rng) -> str:
    """Return text from ids, re-encoded and adjusted (at most 10 times) towards len(ids) tokens.

    As vLLM's random dataset does (`gen_prompt_decode_to_target_len`): decode, re-encode,
    truncate or pad with random ids, and again.
    """
    target = len(ids)
    for _ in range(10):
        text = tok.decode(ids)
        ids = tok(text, add_special_tokens=False).input_ids
        if len(ids) == target:
            break
        ids = ids[:target] + [int(i) for i in rng.choice(allowed, max(0, target - len(ids)))]
    return text


def check_endpoint(url: str, api_key: str | None = None, timeout_s: float = 10.0) -> list[str]:
    """Return the model ids GET /v1/models lists ([] if it lists none); raise if nothing answers."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        # trust_env=False: the load (aiohttp) ignores HTTP_PROXY too, so both reach the same place
        resp = httpx.get(url + "/v1/models", headers=headers, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        raise EndpointUnreachableError(
            f"nothing answers at {url} ({type(exc).__name__}: {exc}). Check that the server "
            "is running and healthy, and the host and port (e.g. http://127.0.0.1:8000, "
            "without /v1)."
        ) from None
    try:
        return [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else []
    except (ValueError, KeyError, TypeError):
        return []


def environment(model: str, dtype: str | None = None) -> dict:
    """Return the machine and software this client ran on (the server's too, on loopback)."""
    versions = package_versions("deploykit", "aiohttp", "numpy", "torch", "transformers", "vllm")
    return {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "model": model,
        "dtype": dtype or "not given",
        "load_average": [round(x, 2) for x in load_average()],
    }


def _as_list(value, name: str) -> list:
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise InvalidArgumentError(f"{name} is empty; give at least one level, e.g. {name}=[1, 8]")
    return values


def _levels(concurrency, request_rate, burstiness) -> list[tuple[int | None, float]]:
    """Return the (concurrency, request rate) of each load level; raise on a bad choice."""
    conc, rates = _as_list(concurrency, "concurrency"), _as_list(request_rate, "request_rate")
    if bool(conc) == bool(rates):
        raise InvalidArgumentError(
            "give exactly one of concurrency (closed loop: e.g. --concurrency 1,8,32) and "
            "request_rate (open loop: requests per second, e.g. --request-rate 2,4,8)"
            + (", not both." if conc else ".")
        )
    if conc and burstiness != 1.0:
        raise InvalidArgumentError(
            "burstiness shapes open-loop arrivals; use it with request_rate, not concurrency."
        )
    if any(isinstance(r, float) and math.isinf(r) for r in rates):
        raise InvalidArgumentError(
            "request_rate must be finite; for requests sent as fast as "
            "earlier ones end, use concurrency instead."
        )
    levels = [(c, math.inf) for c in conc] + [(None, r) for r in rates]
    for c, r in levels:
        check_load(1, c, r, burstiness)
    return levels


def _base_url(url: str) -> str:
    check_http_url(url, "url", "http://127.0.0.1:8000")
    return re.sub(r"/v1/?$", "", url.rstrip("/"))


def bench_serve(
    url: str,
    *,
    model: str | None = None,
    concurrency: int | Sequence[int] | None = None,
    request_rate: float | Sequence[float] | None = None,
    burstiness: float = 1.0,
    num_prompts: int = 64,
    input_tokens: int = 128,
    output_tokens: int = 128,
    warmups: int = 2,
    seed: int = 0,
    tokenizer: str | None = None,
    chat: bool = False,
    ignore_eos: bool = True,
    temperature: float = 0.0,
    stream: bool = True,
    keep_alive: bool = True,
    percentiles: Sequence[float] = (99,),
    goodput_slo_ms: Mapping[str, float] | None = None,
    label: str | None = None,
    dtype: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 600.0,
    result_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Benchmark a running OpenAI-compatible endpoint at each load level; return vLLM-named results.

    Give concurrency (closed loop) or request_rate (open loop, with burstiness), a number
    or a list. model None takes the first one GET /v1/models lists. Prompts come from
    tokenizer (default: model) where it resolves locally. ignore_eos asks for exactly
    output_tokens tokens (servers that reject the field fail with that reason). stream=False
    is for servers that cannot stream: TTFT is then the whole latency (the user sees nothing
    earlier) and TPOT and ITL are not measured. keep_alive=False opens a connection per
    request, for servers that drop kept-alive ones (llama.cpp's, at times). Failed
    requests are counted in `failed` with their reasons in `errors`, never raised.
    result_dir gets one JSON file per level. Bad arguments and an endpoint that does not
    answer raise before any load is sent.
    """
    base = _base_url(url)
    levels = _levels(concurrency, request_rate, burstiness)
    for name, value, low in (
        ("num_prompts", num_prompts, 1),
        ("input_tokens", input_tokens, 1),
        ("output_tokens", output_tokens, 1),
        ("warmups", warmups, 0),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= {low}")
    if not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise InvalidArgumentError(f"temperature={temperature!r} must be >= 0 (0: greedy)")
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise InvalidArgumentError(f"timeout_s={timeout_s!r} must be a number of seconds > 0")
    if any(not isinstance(p, (int, float)) or not 0 < p <= 100 for p in percentiles):
        raise InvalidArgumentError(f"percentiles={list(percentiles)!r} must each be in (0, 100]")
    slo = check_slo(goodput_slo_ms)

    served = check_endpoint(base, api_key)  # the only request before the load: no tokens
    if model is None:
        if not served:
            raise InvalidArgumentError(
                f"{base}/v1/models lists no model; pass the model name "
                "the server expects (--model)."
            )
        model = served[0]
    elif served and model not in served:
        warnings.warn(
            f"{base} serves {served}, not {model!r}: expect its requests to fail.", stacklevel=2
        )
    per_level = warmups + num_prompts
    prompts = synthetic_prompts(per_level * len(levels), input_tokens, tokenizer or model, seed)
    counts = prompts.token_counts or tuple(input_tokens for _ in prompts.texts)
    spec = LoadSpec(
        model=model,
        max_tokens=output_tokens,
        temperature=temperature,
        ignore_eos=ignore_eos,
        stream=stream,
        chat=chat,
        timeout_s=timeout_s,
        api_key=api_key,
        keep_alive=keep_alive,
    )
    env = environment(model, dtype)
    results = []
    for k, (conc, rate) in enumerate(levels):
        first = k * per_level
        if warmups:  # not measured: first requests load code paths and open connections
            run_load(
                base, spec, warmups, conc or warmups, prompts=prompts.texts[first : first + warmups]
            )
        load = run_load(
            base,
            spec,
            num_prompts,
            conc,
            progress,
            request_rate=rate,
            burstiness=burstiness,
            seed=seed + k,
            prompts=prompts.texts[first + warmups : first + per_level],
            prompt_tokens=counts[first + warmups : first + per_level],
        )
        results.append(
            {
                "date": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
                "endpoint_type": "openai-chat" if chat else "openai",
                "backend": "openai-chat" if chat else "openai",
                "label": label or model,
                "model_id": model,
                "tokenizer_id": prompts.tokenizer_id,
                "num_prompts": num_prompts,
                "request_rate": "inf" if math.isinf(rate) else rate,
                "burstiness": burstiness,
                "max_concurrency": conc,
                "duration": load.wall_s,
                **load.serve_metrics(percentiles, slo),
                "input_len": input_tokens,
                "output_len": output_tokens,
                "num_warmups": warmups,
                "seed": seed,
                "ignore_eos": ignore_eos,
                "stream": stream,
                "keep_alive": keep_alive,
                "endpoint": base + ("/v1/chat/completions" if chat else "/v1/completions"),
                "prompt_source": prompts.source,
                "environment": env,
            }
        )
    if result_dir is not None:
        save_results(results, result_dir)
    return results


def result_name(result: Mapping) -> str:
    """Return a file name for one result: label, load level, date."""
    level = (
        f"concurrency{result['max_concurrency']}"
        if result["request_rate"] == "inf"
        else f"{result['request_rate']:g}qps"
    )
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(result["label"])).strip("_")
    return f"{label}-{level}-{result['date']}.json"


def save_results(results: Sequence[Mapping], result_dir: str | Path) -> list[Path]:
    """Write each result as JSON (vLLM's field names) into result_dir; return the paths."""
    folder = Path(result_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        path = folder / result_name(result)
        path.write_text(json.dumps(result, indent=1, allow_nan=False))
        paths.append(path)
    return paths
