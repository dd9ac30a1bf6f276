"""deploykit: the library behind the LLM deployment cookbook.

Notebooks import this package only (`import deploykit as dk`); every name below keeps its
name from the module that defines it.
"""

from .errors import (DeployKitError, EndpointUnreachableError, EngineArgumentError,
                     EngineOverloadedError, EngineRunError, EngineStepError, EngineStoppedError,
                     InvalidArgumentError, InvalidRequestError, MetricNotFoundError,
                     MissingCredentialError, MissingExtraError, ModelBuildError, NginxConfigError,
                     NotebookNotFoundError, PrometheusError, RecipeKeyError, RequestRejectedError,
                     RetryBudgetExhaustedError, ServerStartError, StreamInterruptedError,
                     UnknownGPUError, UnknownModelError, UnknownRecipeError, VLLMEnvError)
from .cookbook import NotebookResult, Recipe, load_recipe, run_cookbook
from .launch import Job, Server, free_port, launch_server, run_job, stop_all
from .faults import Fault, FaultProxy, start_fault_proxy
from .generate import (Arrivals, Generation, generate, measure_throughput, memory_footprint,
                       record_arrivals, stream)
from .server.process import serve_command, start_server
from .models import (BUILTIN_MODELS, TOY_MODELS, LoadedModel, ModelSource, build_report, describe,
                     dtype_names, load_model, resolve_model, smollm2_path, toy_path)
from .gguf import export_gguf
from .quantize import (QUANTIZATIONS, Quantization, WeightBytes, available_quantizations,
                       measure_quantization, plot_quantization, quantization_table, serving_table,
                       weight_bytes)
from .plan import (GPU, GPUS, MemoryPlan, ModelConfig, cache_bytes, memory_plan, memory_plans,
                   model_config, plan_table, smallest_fit)
from .monitor import (ENGINES, AlertRules, Metrics, MetricsTrace, Panel, Prometheus, check_rules,
                      error_ratio, errors_per_s, generation_tokens_per_s, kv_cache_usage,
                      metric_selector, metrics_delta, parse_metrics, prometheus_config,
                      requests_running, requests_waiting, scrape_metrics, standard_panels,
                      start_prometheus, test_rules, ttft_quantile, watch_metrics,
                      grafana_dashboard, write_grafana_dashboard, LiveTrace, live_panels,
                      plot_panels, read_panels, watch_live, write_prometheus_config)
from .engines import (EngineArgs, LlamaCppArgs, OfflineResult, PrefixCacheResult, VLLMArgs,
                      VLLMEnv, ensure_vllm_env, find_vllm_env, measure_prefix_cache,
                      median_ttft_s, offline_generate, start_engine, start_llamacpp, start_vllm)
from .engines.ollama import create_command, modelfile, ollama_available, write_modelfile
from .engines.tgi import TGIArgs, openai_equivalent, start_tgi, tgi_runnable
from .plots import plot_bars, plot_kv_growth, plot_plan_knobs, plot_trace
from .client import (PROVIDER_ENDPOINTS, ProviderEndpoint, hosted_key_status, openai_client,
                     provider_endpoints, tgi_client)
from .client import (RETRY_STATUSES, AsyncResilientClient, AsyncTextStream, CacheMetrics,
                     ClientStats, Completion, MemoryCache, ModelIdentity, ResilientClient,
                     ResponseCache, ResponseCacheMiddleware, RetryPolicy, SQLiteCache, StreamInfo,
                     TextStream, Timeouts, cache_key, is_deterministic, model_digest,
                     model_identity, parse_retry_after)
from .client.scenarios import (ScenarioResult, StreamOutcome, consume_stream, kill_replica,
                               plot_fault_results, resilient_requester, results_table,
                               retry_gaps_s, run_scenario, seed_call, seed_requester,
                               seed_stream)
from .hosted import (DIALECTS, GPU_PRICES, KINDS, PLATFORMS, PRICES, GPUPrice, Platform,
                     PredictionRequest, SelfHostedCost, TokenPrice, bedrock_client, break_even,
                     break_even_table, converse_request, converse_text, converse_usage, gpu_price,
                     hosted_cost_per_day, platform_browser, platform_table, plot_break_even,
                     prediction_request, prediction_text, self_hosted_cost_per_day,
                     send_prediction, token_price)
from .deploy import (COMPOSE_SCHEMA_SOURCE, KUBERNETES_VERSION, SEED_DOCKERFILE, Check,
                     DeploymentConfig, DrainResult, HostCommand, Substitution, compose_file,
                     compose_yaml, container_command, docker_commands, docker_differences,
                     dockerfile, exec_form, hadolint_version, healthcheck_command, host_command,
                     image_command, kubernetes_commands, kubernetes_differences,
                     lint_dockerfile, manifests, manifests_yaml, plot_pod_timeline,
                     probe_timeline, probes, run_healthcheck, sigterm_drain, validate_compose,
                     validate_manifests, write_docker_files, write_manifests)
from .deploy.nginx import (check_nginx_config, nginx_config, nginx_path, nginx_worker_user,
                          start_nginx, write_nginx_config)
from .router import (REPLICA_HEADER, DrillRequest, DrillResult, RouterConfig, drill_table,
                     failover_drill, plot_drills, router_command, router_stats, served_by_replica,
                     start_replicas, start_router, time_to_rejoin)
from .bench.loadgen import (LoadResult, LoadSpec, RequestResult, arrival_times_s,
                            probe_during_load, run_load, summary_rows, sweep)
from .bench.metrics import completed_latencies_s, goodput, serve_metrics
from .bench.plots import plot_bench, plot_sweeps
from .bench.serve import (RESULT_FIELDS, bench_serve, bench_table, failure_reasons, format_result,
                          save_results, synthetic_prompts)
from .batching import (BATCHING_PROMPTS, BATCHING_STRATEGIES, BatchingOutcome, BatchingRequest,
                       BatchingResult, BatchingWorkload, ForwardPass, answer_agreement,
                       batching_conditions, batching_table, batching_workload, compare_batching,
                       plot_batch_sizes, plot_batching, run_batching)

__version__ = "0.1.0"

__all__ = [
    # errors
    "DeployKitError", "EngineArgumentError", "EngineOverloadedError", "EngineRunError",
    "EngineStepError", "EngineStoppedError", "InvalidArgumentError", "InvalidRequestError",
    "MetricNotFoundError", "MissingCredentialError", "MissingExtraError", "ModelBuildError",
    "NotebookNotFoundError", "RecipeKeyError", "ServerStartError", "UnknownGPUError",
    "UnknownModelError", "UnknownRecipeError", "VLLMEnvError", "EndpointUnreachableError",
    "PrometheusError", "RequestRejectedError", "RetryBudgetExhaustedError",
    "StreamInterruptedError", "NginxConfigError",
    # cookbook runner
    "NotebookResult", "Recipe", "load_recipe", "run_cookbook",
    # processes
    "Job", "Server", "free_port", "launch_server", "run_job", "stop_all",
    "serve_command", "start_server",
    "Fault", "FaultProxy", "start_fault_proxy",
    # models and generation
    "BUILTIN_MODELS", "TOY_MODELS", "LoadedModel", "ModelSource", "build_report", "describe",
    "dtype_names", "load_model", "resolve_model", "smollm2_path", "toy_path", "export_gguf",
    "Arrivals", "Generation", "generate", "measure_throughput", "memory_footprint",
    "record_arrivals", "stream",
    # quantization
    "QUANTIZATIONS", "Quantization", "WeightBytes", "available_quantizations",
    "measure_quantization", "plot_quantization", "quantization_table", "serving_table",
    "weight_bytes",
    # memory planner
    "GPU", "GPUS", "MemoryPlan", "ModelConfig", "cache_bytes", "memory_plan", "memory_plans",
    "model_config", "plan_table", "smallest_fit",
    # metrics
    "Metrics", "MetricsTrace", "metrics_delta", "parse_metrics", "scrape_metrics", "watch_metrics",
    # monitoring: PromQL for deploykit and vLLM alike, Prometheus, alert rules
    "ENGINES", "Panel", "metric_selector", "ttft_quantile", "generation_tokens_per_s",
    "requests_waiting", "requests_running", "kv_cache_usage", "errors_per_s", "error_ratio",
    "standard_panels", "AlertRules", "check_rules", "test_rules", "Prometheus",
    "prometheus_config", "start_prometheus", "grafana_dashboard", "write_grafana_dashboard",
    "LiveTrace", "live_panels", "plot_panels", "read_panels", "watch_live",
    "write_prometheus_config",
    # engines
    "EngineArgs", "LlamaCppArgs", "OfflineResult", "PrefixCacheResult", "VLLMArgs", "VLLMEnv",
    "ensure_vllm_env", "find_vllm_env", "measure_prefix_cache", "median_ttft_s",
    "offline_generate", "start_engine", "start_llamacpp", "start_vllm",
    "TGIArgs", "openai_equivalent", "start_tgi", "tgi_runnable",
    "create_command", "modelfile", "ollama_available", "write_modelfile",
    # clients
    "tgi_client", "PROVIDER_ENDPOINTS", "ProviderEndpoint", "hosted_key_status", "openai_client",
    "provider_endpoints",
    # resilient client and response cache
    "RETRY_STATUSES", "AsyncResilientClient", "CacheMetrics", "ClientStats", "Completion",
    "MemoryCache", "ModelIdentity", "ResilientClient", "ResponseCache", "ResponseCacheMiddleware",
    "RetryPolicy", "SQLiteCache", "Timeouts", "cache_key", "is_deterministic", "model_digest",
    "model_identity", "parse_retry_after", "AsyncTextStream", "StreamInfo", "TextStream",
    # fault scenarios: the seed's client against ours
    "ScenarioResult", "StreamOutcome", "consume_stream", "kill_replica", "plot_fault_results",
    "resilient_requester", "results_table", "retry_gaps_s", "run_scenario", "seed_call",
    "seed_requester", "seed_stream",
    # hosted endpoints: platforms, request builders, costs
    "DIALECTS", "KINDS", "PLATFORMS", "Platform", "platform_browser", "platform_table",
    "bedrock_client", "converse_request", "converse_text", "converse_usage",
    "PredictionRequest", "prediction_request", "prediction_text", "send_prediction",
    "GPU_PRICES", "PRICES", "GPUPrice", "SelfHostedCost", "TokenPrice", "break_even",
    "break_even_table", "gpu_price", "hosted_cost_per_day", "plot_break_even",
    "self_hosted_cost_per_day", "token_price",
    # plots
    "plot_bars", "plot_kv_growth", "plot_plan_knobs", "plot_trace",
    # container files: Dockerfile, Compose, Kubernetes, and their checks
    "DeploymentConfig", "dockerfile", "image_command", "container_command", "healthcheck_command",
    "compose_file", "compose_yaml", "write_docker_files", "docker_commands", "exec_form",
    "HostCommand", "Substitution", "host_command", "run_healthcheck", "DrainResult",
    "sigterm_drain", "manifests", "manifests_yaml", "write_manifests", "kubernetes_commands",
    "probe_timeline", "probes", "plot_pod_timeline", "KUBERNETES_VERSION", "Check",
    "lint_dockerfile", "validate_compose", "validate_manifests", "hadolint_version",
    "COMPOSE_SCHEMA_SOURCE", "SEED_DOCKERFILE", "docker_differences", "kubernetes_differences",
    # load generation
    "LoadResult", "LoadSpec", "RequestResult", "plot_sweeps", "probe_during_load", "run_load",
    "summary_rows", "sweep", "arrival_times_s",
    # serving benchmark (vLLM's `bench serve` metrics and field names)
    "RESULT_FIELDS", "bench_serve", "bench_table", "completed_latencies_s", "failure_reasons",
    "format_result", "goodput", "plot_bench", "save_results", "serve_metrics",
    "synthetic_prompts",
    # batching strategies in-process: none, static, dynamic, continuous
    "BATCHING_PROMPTS", "BATCHING_STRATEGIES", "BatchingOutcome", "BatchingRequest",
    "BatchingResult", "BatchingWorkload", "ForwardPass", "answer_agreement",
    "batching_conditions", "batching_table",
    "batching_workload", "compare_batching", "plot_batch_sizes", "plot_batching", "run_batching",
    # load balancing over replicas: deploykit's router and nginx
    "REPLICA_HEADER", "RouterConfig", "router_command", "router_stats", "start_router",
    "DrillRequest", "DrillResult", "drill_table", "failover_drill", "plot_drills",
    "served_by_replica", "start_replicas", "time_to_rejoin",
    "check_nginx_config", "nginx_config", "nginx_path", "nginx_worker_user", "start_nginx",
    "write_nginx_config",
]
