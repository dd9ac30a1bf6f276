"""Monitoring: read /metrics, run Prometheus, alert rules, a Grafana dashboard, a live view.

deploykit's server exposes vLLM's metric names under its own prefix (`server.metrics`),
so everything here reads deploykit and vLLM servers alike (`promql`).
"""

from .grafana import grafana_dashboard, write_grafana_dashboard
from .live import live_panels, replay_live, watch_live
from .plots import plot_trace
from .prom import Prometheus, start_prometheus, write_prometheus_config
from .promql import generation_tokens_per_s, metric_selector, ttft_quantile
from .rules import AlertRules, check_config, check_rules, test_rules
from .scrape import Metrics, MetricsTrace, scrape_metrics, watch_metrics

__all__ = [
    "grafana_dashboard",
    "write_grafana_dashboard",
    "live_panels",
    "replay_live",
    "watch_live",
    "plot_trace",
    "Prometheus",
    "start_prometheus",
    "write_prometheus_config",
    "generation_tokens_per_s",
    "metric_selector",
    "ttft_quantile",
    "AlertRules",
    "check_config",
    "check_rules",
    "test_rules",
    "Metrics",
    "MetricsTrace",
    "scrape_metrics",
    "watch_metrics",
]
