"""Monitoring: read /metrics, run Prometheus, alert rules, a Grafana dashboard, a live view.

deploykit's server exposes vLLM's metric names under its own prefix (`server.metrics`),
so everything here reads deploykit and vLLM servers alike (`promql`).
"""

from .scrape import Metrics, MetricsTrace, metrics_delta, parse_metrics, scrape_metrics, watch_metrics
from .promql import (ENGINES, Panel, error_ratio, errors_per_s, generation_tokens_per_s,
                     kv_cache_usage, metric_selector, requests_running, requests_waiting,
                     standard_panels, ttft_quantile)
from .rules import AlertRules, check_rules, test_rules
from .prom import Prometheus, prometheus_config, start_prometheus, write_prometheus_config
from .grafana import grafana_dashboard, write_grafana_dashboard
from .live import LiveTrace, live_panels, plot_panels, read_panels, watch_live

__all__ = [
    "Metrics", "MetricsTrace", "metrics_delta", "parse_metrics", "scrape_metrics", "watch_metrics",
    "ENGINES", "Panel", "error_ratio", "errors_per_s", "generation_tokens_per_s", "kv_cache_usage",
    "metric_selector", "requests_running", "requests_waiting", "standard_panels", "ttft_quantile",
    "AlertRules", "check_rules", "test_rules",
    "Prometheus", "prometheus_config", "start_prometheus", "write_prometheus_config",
    "grafana_dashboard", "write_grafana_dashboard",
    "LiveTrace", "live_panels", "plot_panels", "read_panels", "watch_live",
]
