"""`deploykit doctor`: given a URL and/or a planned configuration, say what is wrong and the fix.

    deploykit doctor http://127.0.0.1:8000
    deploykit doctor http://127.0.0.1:8000 --load --log server.log
    deploykit doctor --plan-model smollm2-135m --plan-engine llamacpp --plan-context 4000000
    deploykit doctor http://127.0.0.1:8000 --request failing.json

Each cause is named from evidence, never guessed: the connection and the listening sockets
(refused connections), health paths, three identical requests (cold start), a stream's
timing (buffering proxy), the server's rendering of a conversation (chat template),
/metrics (preemptions, prefill share), the planner (out of memory on load), the log and the
CPU (dtype), a replayed request (context), and with --load, latency at concurrency 1 and 8
(batching) and a burst (429/503). Exit status 1 when a cause is found, 0 when none is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import _connection, _memory, _symptoms
from ._http import Endpoint
from .diagnosis import Diagnosis, DoctorReport
from .suite import api_key_from_env


def doctor(
    url: str | None = None,
    *,
    plan: Any = None,
    log: str | Path | BaseException | None = None,
    request: dict[str, Any] | None = None,
    load: bool = False,
    model: str | None = None,
    health_path: str = "/health",
    api_key_env: str | None = None,
    timeout_s: float = 30.0,
    concurrency: int = 8,
    burst: int = 24,
    metrics_since: Any = None,
) -> DoctorReport:
    """Find what is wrong with an endpoint and/or a planned configuration; say the fix.

    plan: the engine's arguments (dk.VLLMArgs, dk.LlamaCppArgs) or a dict (model, gpu or
    memory_bytes, weights, context_tokens, seqs): checked with the planner for OOM on load
    and for its dtype. log: the server's log file (OOM lines, the dtype it computes in), or the
    ServerStartError of a server that did not start (its message holds the log's end). request:
    a request body that fails, replayed once (context length). load: also time concurrency
    1 against `concurrency`, and send a burst of `burst` requests (bounded, to url only).
    metrics_since: a `dk.scrape_metrics(url)` taken before the traffic of interest; /metrics
    is then read as what changed since (else since the server started).
    """
    start = time.perf_counter()
    found: list[Diagnosis] = []
    seen: list[str] = []
    data: dict[str, Any] = {}
    text = _memory.read_log(log)
    local = True
    if url is not None:
        host, port = _connection.host_port(url)
        local = _connection.is_local(host)
    if plan is not None or text:
        oom = _memory.diagnose_oom(plan, text)
        if oom:
            found.append(oom)
        else:
            seen.append(
                "memory: the planned configuration fits"
                if plan is not None
                else "log: no out-of-memory line"
            )
        dtype, line = _memory.diagnose_dtype(plan, text, local, _hidden(plan, model))
        found += [dtype] if dtype else []
        if plan is not None or "unknown" not in line:
            seen.append(line)
    if url is not None:
        _probe(
            url,
            found,
            seen,
            data,
            model=model,
            request=request,
            load=load,
            health_path=health_path,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            concurrency=concurrency,
            burst=burst,
            plan=plan,
            log_text=text,
            local=local,
            metrics_since=metrics_since,
        )
    return DoctorReport(url, tuple(found), tuple(seen), time.perf_counter() - start, data)


def _hidden(plan: Any, model: str | None) -> int:
    name = (
        getattr(plan, "model", None)
        or (plan.get("model") if isinstance(plan, dict) else None)
        or model
    )
    if name:
        try:
            from ..plan.memory import model_config

            return model_config(name).hidden_size
        except Exception:
            pass
    return 1024


def _probe(
    url: str,
    found: list[Diagnosis],
    seen: list[str],
    data: dict[str, Any],
    *,
    model: str | None,
    request: dict[str, Any] | None,
    load: bool,
    health_path: str,
    api_key_env: str | None,
    timeout_s: float,
    concurrency: int,
    burst: int,
    plan: Any,
    log_text: str,
    local: bool,
    metrics_since: Any,
) -> None:
    host, port = _connection.host_port(url)
    why = _connection.connects(host, port)
    if why is not None:
        found.append(_connection.diagnose_refused(url, why, model, log_text))
        return
    seen.append(f"TCP connect to {host}:{port}: open")
    ep = Endpoint(
        url, api_key=api_key_from_env(api_key_env), api_key_env=api_key_env, timeout_s=timeout_s
    )
    try:
        health, line = _connection.diagnose_health(ep, health_path)
        seen.append(line)
        if health is not None:
            found.append(health)
            if health.cause == "unhealthy":
                return
        listed = ep.send("GET", "/v1/models", timeout_s=10)
        cards = listed.data.get("data") if isinstance(listed.data, dict) else None
        if listed.status != 200 or not cards:
            if model is None:
                seen.append(
                    f"GET /v1/models: {listed.status}; give the model's name (model=) for the "
                    "generation probes"
                )
                return
            seen.append(f"GET /v1/models: {listed.status}; probing with model {model!r}")
            cards = [{"id": model}]
        card = next((c for c in cards if c.get("id") == model), cards[0])
        model = model or card.get("id")
        context = card.get("max_model_len") or _props_context(ep)
        seen.append(f"model {model!r}, context {context or 'not said'}")
        # /metrics first: the traffic before doctor came (since metrics_since, else since the
        # server started), which doctor's own probes must not dilute
        metrics_now, prefix = _symptoms.read_metrics(ep)
        if metrics_now is None:
            seen.append("GET /metrics: none (preemptions and the prefill share not read)")
        else:
            window = (
                "since the snapshot" if metrics_since is not None else "since the server started"
            )
            for diagnosis, line in (
                _symptoms.preemptions(metrics_since, metrics_now, prefix, window),
                _symptoms.long_prompts(metrics_now, prefix, metrics_since),
            ):
                seen.append(line)
                found += [diagnosis] if diagnosis else []
        # the cold-start probe must be the first generation doctor sends
        for probe in (_symptoms.cold_start, _symptoms.buffered_stream, _symptoms.chat_template):
            diagnosis, line, figures = probe(ep, model)
            seen.append(line)
            data.update(figures)
            found += [diagnosis] if diagnosis else []
        if request is not None:
            diagnosis, line, figures = _symptoms.context_exceeded(
                ep, {"model": model, **request}, context
            )
            seen.append(line)
            data.update(figures)
            found += [diagnosis] if diagnosis else []
        if load:
            for diagnosis, line, figures in (
                _symptoms.batching(ep, model, prefix, concurrency),
                _symptoms.overload(ep, model, burst),
            ):
                seen.append(line)
                data.update(figures)
                found += [diagnosis] if diagnosis else []
        if load and metrics_now is not None and "kv_preemption" not in [d.cause for d in found]:
            after, prefix = _symptoms.read_metrics(ep)
            diagnosis, line = _symptoms.preemptions(
                metrics_now, after, prefix, "during doctor's load"
            )
            seen.append(line)
            found += [diagnosis] if diagnosis else []
        if plan is None and not log_text:
            seen.append("dtype: give the server's log (log=) or its arguments (plan=) to check it")
    finally:
        ep.close()


def _props_context(ep: Endpoint) -> int | None:
    """Return llama.cpp's per-slot context from /props, if it has one."""
    props = ep.send("GET", "/props", timeout_s=10)
    if props.status == 200 and isinstance(props.data, dict):
        n = (props.data.get("default_generation_settings") or {}).get("n_ctx")
        return n if isinstance(n, int) else None
    return None


# ---- the command line -----------------------------------------------------------------------


def add_cli(sub) -> None:
    """Add `deploykit doctor` to the CLI."""
    p = sub.add_parser(
        "doctor",
        help="say what is wrong with an endpoint or a planned configuration, and the fix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", nargs="?", help="the endpoint's base URL")
    p.add_argument("--health-path", default="/health", help="the path your probes use")
    p.add_argument("--model", help="model name to send (default: the first listed)")
    p.add_argument("--log", help="the server's log file (OOM lines, its dtype)")
    p.add_argument("--request", help="a JSON file with a request body that fails (replayed once)")
    p.add_argument("--load", action="store_true", help="also time concurrency 1 vs 8 and a burst")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    g = p.add_argument_group("a planned configuration (instead of, or with, the URL)")
    g.add_argument("--plan-model", help="the model, e.g. smollm2-135m or Llama-3-8B")
    g.add_argument("--plan-engine", choices=("vllm", "llamacpp"), default="vllm")
    g.add_argument(
        "--plan-context", type=int, help="context tokens (vLLM max_model_len, llama.cpp ctx_size)"
    )
    g.add_argument("--plan-dtype", default="auto", help="vLLM's --dtype")
    g.add_argument("--plan-kv-gib", type=int, help="vLLM-CPU's KV space (VLLM_CPU_KVCACHE_SPACE)")
    g.add_argument(
        "--plan-gpu", help="a GPU from the planner's catalog (then model/weights/context)"
    )
    g.add_argument("--plan-weights", default="bf16", help="with --plan-gpu: fp32, bf16, int8, nf4")
    p.set_defaults(func=_cli_doctor)


def _cli_plan(args: argparse.Namespace) -> Any:
    if not args.plan_model:
        return None
    if args.plan_gpu:
        plan: dict[str, Any] = {
            "model": args.plan_model,
            "gpu": args.plan_gpu,
            "weights": args.plan_weights,
        }
        if args.plan_context:
            plan["context_tokens"] = args.plan_context
        return plan
    if args.plan_engine == "llamacpp":
        from ..engines.llamacpp import LlamaCppArgs

        return LlamaCppArgs(model=args.plan_model, ctx_size=args.plan_context or 2048)
    from ..engines.vllm import VLLMArgs

    return VLLMArgs(
        model=args.plan_model,
        dtype=args.plan_dtype,
        max_model_len=args.plan_context,
        cpu_kvcache_space_gib=args.plan_kv_gib,
    )


def _cli_doctor(args: argparse.Namespace) -> int:
    from ..errors import InvalidArgumentError

    plan = _cli_plan(args)
    if args.url is None and plan is None and not args.log:
        raise InvalidArgumentError(
            "give a URL, a planned configuration (--plan-model ...) or a log (--log), e.g. "
            "`deploykit doctor http://127.0.0.1:8000`."
        )
    request = json.loads(Path(args.request).read_text()) if args.request else None
    report = doctor(
        args.url,
        plan=plan,
        log=args.log,
        request=request,
        load=args.load,
        model=args.model,
        health_path=args.health_path,
        api_key_env=args.api_key_env,
    )
    print(report.to_json() if args.json else report.text())
    return report.exit_code
