"""Run a real Prometheus (Debian's `prometheus`) over deploykit, vLLM or llama.cpp servers.

`prometheus_config` writes the scrape configuration for any list of targets;
`start_prometheus` starts the server through `launch.launch_server` (own process group,
health polled at `/-/ready`, stopped at exit) on a free loopback port with a temporary
storage folder; `Prometheus` runs instant and range PromQL queries into pandas and reads
the alerts API. Nothing here installs Prometheus: `apt-get install prometheus`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from .._urls import check_http_url
from ..errors import InvalidArgumentError, PrometheusError
from ..launch import Server, launch_server
from .promql import duration
from .rules import AlertRules, prometheus_path

_JOB = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")


def _static_config(url: str) -> tuple[str, str, str]:
    """Return (scheme, host:port, metrics path) of a target URL."""
    parts = check_http_url(
        url if "://" in url else f"http://{url}",
        "a scrape target",
        "'http://127.0.0.1:8000' (a server's .url)",
        need_port=True,
    )
    return parts.scheme, parts.netloc, parts.path if parts.path not in ("", "/") else "/metrics"


def prometheus_config(
    targets: Mapping[str, Any],  # a URL, a Server (.url), or an iterable of them
    *,
    scrape_interval_s: float = 15.0,
    evaluation_interval_s: float | None = None,
    rule_files: Sequence[str | os.PathLike[str]] = (),
) -> dict:
    """Return a Prometheus configuration that scrapes targets: job name -> URL(s) or Server(s).

    A URL without a path is scraped at /metrics (deploykit, vLLM, and llama.cpp's server
    started with metrics=True all serve it there); give the path otherwise.
    """
    if not isinstance(targets, Mapping) or not targets:
        raise InvalidArgumentError(
            "targets must be a non-empty mapping of job name to URL(s), "
            "e.g. {'deploykit': server.url, 'vllm': vllm.url}."
        )
    interval = duration(scrape_interval_s, "scrape_interval_s")
    jobs = []
    for job, urls in targets.items():
        if not isinstance(job, str) or not _JOB.match(job):
            raise InvalidArgumentError(f"job name {job!r} must be letters, digits, '_' or '-'.")
        urls = [urls] if isinstance(urls, str) or hasattr(urls, "url") else list(urls)
        groups: dict[tuple[str, str], list[str]] = {}
        for url in urls:
            scheme, address, path = _static_config(str(getattr(url, "url", url)))
            groups.setdefault((scheme, path), []).append(address)
        for n, ((scheme, path), addresses) in enumerate(groups.items()):
            jobs.append(
                {
                    "job_name": job if n == 0 else f"{job}-{n}",
                    "scheme": scheme,
                    "metrics_path": path,
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "static_configs": [{"targets": addresses, "labels": {"service": job}}],
                }
            )
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": duration(
                evaluation_interval_s or scrape_interval_s, "evaluation_interval_s"
            ),
        },
        "scrape_configs": jobs,
    }
    if rule_files:
        config["rule_files"] = [os.fspath(Path(p).resolve()) for p in rule_files]
    return config


def write_prometheus_config(
    path: str | os.PathLike[str], targets: Mapping[str, object], **options
) -> Path:
    """Write `prometheus_config(targets, **options)` as YAML to path; return the path.

    Rule files inside path's folder are written relative to it (Prometheus reads them
    relative to its config file), so the folder can be copied as it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(targets, **options)
    folder = path.parent.resolve()
    config_rules = [Path(p) for p in config.get("rule_files", [])]
    if config_rules:
        config["rule_files"] = [
            str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in config_rules
        ]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A running Prometheus: PromQL into pandas, the alerts and targets APIs; stop() ends it."""

    def __init__(self, server: Server, folder: tempfile.TemporaryDirectory, config: dict) -> None:
        self.server, self.config = server, config
        self._folder = folder  # storage and config; removed when stopped (or at exit)
        self._client = httpx.Client(base_url=server.url, timeout=30.0, trust_env=False)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def folder(self) -> Path:
        """Return the temporary folder of the config, rules and storage."""
        return Path(self._folder.name)

    def _get(self, path: str, **params) -> dict:
        response = self._client.get(path, params=params)
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus answered {response.status_code} to {path} "
                f"{params}: {body.get('errorType', '')} {body.get('error', response.text[:300])}. "
                "Check the PromQL (metric names, brackets, durations)."
            )
        return body["data"]

    def query(self, promql: str, at: float | dt.datetime | None = None):
        """Run an instant query; return a DataFrame with one row per series (labels, value).

        A range selector (`x[1m]`) returns one row per sample, with its time.
        """
        import pandas as pd

        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = _unix(at)
        data = self._get("/api/v1/query", **params)
        if data["resultType"] in ("scalar", "string"):
            return pd.DataFrame({"value": [data["result"][1]]})
        if data["resultType"] == "matrix":
            return _samples(data["result"])
        rows = [{**item["metric"], "value": float(item["value"][1])} for item in data["result"]]
        return _frame(rows, ["value"])

    def value(
        self, promql: str, default: float | None = None, at: float | dt.datetime | None = None
    ) -> float:
        """Return the single value of an instant query (default when it has no series)."""
        frame = self.query(promql, at)
        if len(frame) > 1:
            raise PrometheusError(
                f"{promql!r} returned {len(frame)} series; aggregate it "
                "(sum(...)) to get one value."
            )
        if frame.empty:
            if default is None:
                raise PrometheusError(
                    f"{promql!r} returned no series yet; has Prometheus scraped "
                    "the target since the traffic? (see wait_for_scrape)"
                )
            return default
        return float(frame["value"].iloc[0])

    def query_range(
        self,
        promql: str,
        start: float | dt.datetime | None = None,
        end: float | dt.datetime | None = None,
        step_s: float = 1.0,
    ):
        """Run a range query (default: the last 5 minutes); return rows of time, labels, value."""
        end_s = _unix(end) if end is not None else time.time()
        start_s = _unix(start) if start is not None else end_s - 300
        data = self._get(
            "/api/v1/query_range",
            query=promql,
            start=start_s,
            end=end_s,
            step=duration(step_s, "step_s"),
        )
        return _samples(data["result"])

    def alerts(self):
        """Return the active alerts (pending and firing): alertname, state, labels, value, active_at."""
        rows = [
            {
                "alertname": a["labels"].get("alertname"),
                "state": a["state"],
                **{k: v for k, v in a["labels"].items() if k != "alertname"},
                "value": float(a["value"]),
                "active_at": a.get("activeAt"),
            }
            for a in self._get("/api/v1/alerts")["alerts"]
        ]
        return _frame(rows, ["alertname", "state", "value", "active_at"])

    def targets(self):
        """Return the scrape targets: job, url, health (up/down/unknown), last error and scrape."""
        rows = [
            {
                "job": t["labels"].get("job"),
                "url": t["scrapeUrl"],
                "health": t["health"],
                "last_error": t["lastError"],
                "last_scrape": t["lastScrape"],
            }
            for t in self._get("/api/v1/targets", state="active")["activeTargets"]
        ]
        return _frame(rows, ["job", "url", "health", "last_error", "last_scrape"])

    def wait_for_scrape(self, after: float | None = None, timeout_s: float = 30.0) -> None:
        """Wait until every target was scraped (healthy) after `after` (default: now).

        A query run then sees what each server counted at that moment, e.g. all the
        requests of a load that ended before `after`.
        """
        after = time.time() if after is None else after

        def scraped() -> bool:
            frame = self.targets()
            times = [_rfc3339_s(t) for t in frame["last_scrape"]]
            return (
                not frame.empty and all(frame["health"] == "up") and all(t > after for t in times)
            )

        self._wait(
            scraped,
            timeout_s,
            lambda: (
                f"targets not all scraped healthy after {after:.1f}:\n{self.targets().to_string()}"
            ),
        )

    def wait_for_targets(self, timeout_s: float = 30.0) -> None:
        """Wait until every configured target has been scraped and is up.

        Prometheus hands new targets to its scrapers about 5 s after it starts.
        """
        jobs = {
            j["job_name"]: len(c["targets"])
            for j in self.config["scrape_configs"]
            for c in j["static_configs"]
        }

        def up() -> bool:
            frame = self.targets()
            return len(frame) == sum(jobs.values()) and all(frame["health"] == "up")

        self._wait(
            up,
            timeout_s,
            lambda: (
                f"not every target is up:\n{self.targets().to_string()}"
                "\nCheck that each server runs and serves its metrics path."
            ),
        )

    def wait_for_alert(
        self,
        alertname: str,
        state: str = "firing",
        timeout_s: float = 60.0,
        jobs: Iterable[str] | None = None,
    ):
        """Wait until alert `alertname` is in `state` ('pending' or 'firing'); return its rows.

        With `jobs`, wait until it is in that state for every one of those jobs: alerts grouped
        by job become active at different scrapes, so the first job's row can come seconds
        before the others'.
        """
        if state not in ("pending", "firing"):
            raise InvalidArgumentError(f"state={state!r} must be 'pending' or 'firing'.")
        wanted = {jobs} if isinstance(jobs, str) else set(jobs or ())
        found: list = []

        def reached() -> bool:
            frame = self.alerts()
            if not frame.empty:
                frame = frame[(frame["alertname"] == alertname) & (frame["state"] == state)]
            found[:] = [frame]
            if frame.empty:
                return False
            return not wanted or "job" in frame and wanted <= set(frame["job"])

        for_jobs = f" for jobs {sorted(wanted)}" if wanted else ""
        self._wait(
            reached,
            timeout_s,
            lambda: (
                f"alert {alertname!r} not {state}{for_jobs}; active "
                f"alerts:\n{self.alerts().to_string()}\nLower its threshold, send more load, "
                "or raise timeout_s (an alert fires after its `for` duration)."
            ),
        )
        return found[0]

    def _wait(self, done: Callable[[], bool], timeout_s: float, explain: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise PrometheusError(f"waited {timeout_s:g} s: {explain()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop Prometheus and remove its temporary folder; return its exit code."""
        code = self.server.stop(timeout_s)
        self._client.close()
        self._folder.cleanup()
        return code

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<Prometheus {self.url} jobs={[j['job_name'] for j in self.config['scrape_configs']]}>"
        )


def _unix(moment: float | dt.datetime) -> float:
    return moment.timestamp() if isinstance(moment, dt.datetime) else float(moment)


def _rfc3339_s(text: str) -> float:
    """Return the Unix time of Prometheus's RFC 3339 timestamps (nanoseconds, 'Z')."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


def _samples(result: list[dict]):
    """Return a matrix result as rows of time (UTC), labels, value."""
    import pandas as pd

    rows = [
        {"time": pd.Timestamp(t, unit="s", tz="UTC"), **item["metric"], "value": float(v)}
        for item in result
        for t, v in item["values"]
    ]
    return _frame(rows, ["time", "value"])


def _frame(rows: list[dict], last: list[str]):
    """Return rows as a DataFrame: label columns sorted, then `last` (value) columns."""
    import pandas as pd

    labels = sorted({k for row in rows for k in row} - set(last))
    first = [c for c in last if c == "time"]
    columns = first + labels + [c for c in last if c != "time"]
    return pd.DataFrame(rows, columns=columns)


def start_prometheus(
    targets: Mapping[str, object],
    *,
    rules: AlertRules | str | os.PathLike[str] | None = None,
    scrape_interval_s: float = 1.0,
    evaluation_interval_s: float | None = None,
    timeout_s: float = 60.0,
    retention: str = "1d",
    wait_for_targets: bool = True,
) -> Prometheus:
    """Start Prometheus on a free loopback port scraping targets; return it once /-/ready answers.

    targets: job name -> URL(s) or Server(s). rules: alerting rules (an AlertRules, or the
    path of a rule file) that Prometheus evaluates every evaluation_interval_s (default:
    the scrape interval). Storage is a temporary folder, removed by stop(). With
    wait_for_targets, it returns once every target has been scraped and is up.
    """
    binary = prometheus_path()
    folder = tempfile.TemporaryDirectory(prefix="deploykit-prometheus-", ignore_cleanup_errors=True)
    try:
        root = Path(folder.name)
        rule_files = []
        if isinstance(rules, AlertRules):
            rule_files.append(rules.write(root / "rules.yml"))
        elif rules is not None:
            rule_files.append(Path(rules))
        config = prometheus_config(
            targets,
            scrape_interval_s=scrape_interval_s,
            evaluation_interval_s=evaluation_interval_s,
            rule_files=rule_files,
        )
        (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        server = launch_server(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--storage.tsdb.retention.time={retention}",
                "--web.listen-address={host}:{port}",
                "--log.level=warn",
            ],
            health_path="/-/ready",
            timeout_s=timeout_s,
            name="prometheus",
        )
    except BaseException:
        folder.cleanup()
        raise
    prom = Prometheus(server, folder, config)
    if wait_for_targets:
        try:
            prom.wait_for_targets(timeout_s)
        except BaseException:
            prom.stop()
            raise
    return prom
