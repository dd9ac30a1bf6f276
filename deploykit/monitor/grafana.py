"""A Grafana dashboard for deploykit and vLLM servers, generated from the same PromQL.

The dashboard's panels are `promql.standard_panels` (tokens/s, TTFT p50/p95, queue, KV
cache, 5xx errors), so Grafana, the notebook's live view and the alert rules read the
same series. A `datasource` variable picks the Prometheus to read; import the JSON in
Grafana (Dashboards > New > Import) or provision it from a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .promql import METRIC_PREFIXES, standard_panels

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(panel_id: int, panel, by: Sequence[str], x: int, y: int) -> dict:
    legend = " ".join(f"{{{{{label}}}}}" for label in by)
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": _DATASOURCE,
                "expr": expr,
                "legendFormat": (prefix + legend).strip() or "__auto",
                "range": True,
            }
            for n, (prefix, expr) in enumerate(panel.queries)
        ],
    }


def grafana_dashboard(
    title: str = "LLM serving: deploykit and vLLM",
    window: str = "1m",
    by: Sequence[str] = ("job",),
    engines: Sequence[str] = METRIC_PREFIXES,
    refresh: str = "5s",
) -> dict:
    """Return the dashboard JSON model: one timeseries panel per standard panel, two per row."""
    panels = [
        _panel(n + 1, panel, by, x=12 * (n % 2), y=8 * (n // 2))
        for n, panel in enumerate(standard_panels(window, by, engines))
    ]
    return {
        "title": title,
        "uid": "deploykit-llm-serving",
        "editable": True,
        "schemaVersion": 39,
        "tags": ["deploykit", "vllm", "llm"],
        "time": {"from": "now-15m", "to": "now"},
        "refresh": refresh,
        "timezone": "browser",
        "panels": panels,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                }
            ]
        },
        "annotations": {"list": []},
    }


def write_grafana_dashboard(path: str | os.PathLike[str], **options) -> Path:
    """Write `grafana_dashboard(**options)` as JSON to path; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(grafana_dashboard(**options), indent=2) + "\n")
    return path
