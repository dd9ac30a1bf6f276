"""Alerting rules for LLM servers, and promtool to check them and run their unit tests.

`AlertRules` writes three Prometheus alerts that read deploykit and vLLM alike (through
`promql`): a high p95 time to first token, a queue that keeps growing, and a high share
of 5xx responses; thresholds are parameters. It also generates promtool unit tests for
exactly those thresholds: synthetic series that must fire each alert (once for a vLLM
and once for a deploykit server) next to series that must not.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import InvalidArgumentError, PrometheusError
from ..launch import find_executable
from ..server.metrics import TIME_TO_FIRST_TOKEN_BUCKETS_S
from .promql import (
    METRIC_PREFIXES,
    check_window,
    duration,
    error_ratio,
    metric_selector,
    ttft_quantile,
)

_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_TEST_INTERVAL_S = 15  # sample spacing of the generated test series


def duration_s(window: str) -> float:
    """Return the seconds of a PromQL duration such as '5m' or '1h30m'."""
    check_window(window)
    return sum(int(n) * _UNITS_S[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", window))


@dataclass(frozen=True)
class AlertRules:
    """Three alerts over deploykit and vLLM servers, grouped by Prometheus job."""

    ttft_p95_s: float = 2.0  # HighTimeToFirstTokenP95: p95 TTFT above this many seconds
    queue_min_waiting: int = 8  # RequestQueueGrowing: at least this many waiting, and growing
    error_ratio: float = 0.05  # HighErrorRatio: share of HTTP responses that are 5xx
    window: str = "5m"  # the rate() / deriv() window
    for_s: float = 60.0  # how long a condition must hold before its alert fires
    engines: tuple[str, ...] = METRIC_PREFIXES
    group: str = "llm-serving"

    def __post_init__(self) -> None:
        check_window(self.window)
        if not 0 < self.ttft_p95_s < TIME_TO_FIRST_TOKEN_BUCKETS_S[-2]:
            raise InvalidArgumentError(
                f"ttft_p95_s={self.ttft_p95_s!r} must be above 0 and "
                f"below {TIME_TO_FIRST_TOKEN_BUCKETS_S[-2]:g} s (the "
                "histogram has no finer buckets up there)."
            )
        if (
            isinstance(self.queue_min_waiting, bool)
            or not isinstance(self.queue_min_waiting, int)
            or self.queue_min_waiting < 1
        ):
            raise InvalidArgumentError(
                f"queue_min_waiting={self.queue_min_waiting!r} must be a whole number >= 1."
            )
        if not 0 < self.error_ratio < 1:
            raise InvalidArgumentError(
                f"error_ratio={self.error_ratio!r} must be between 0 and "
                "1, e.g. 0.05 for 5 percent."
            )
        duration(self.for_s, "for_s", zero_ok=True)

    # ---- the rules ---------------------------------------------------------------------

    def _annotations(self, name: str, job: str) -> dict[str, str]:
        """Return an alert's annotations for a job (the rule passes '{{ $labels.job }}')."""
        text = {
            "HighTimeToFirstTokenP95": (
                f"p95 time to first token of {job} is above {self.ttft_p95_s:g} s",
                "Users wait too long for the first token: the batch is full, prompts are long, "
                "or prefill competes with decode. Add replicas, or lower max_num_seqs / the "
                "batch size.",
            ),
            "RequestQueueGrowing": (
                f"the request queue of {job} keeps growing (at least {self.queue_min_waiting} "
                "waiting)",
                "Requests arrive faster than the server finishes them: scale out before the "
                "queue turns into timeouts.",
            ),
            "HighErrorRatio": (
                f"more than {self.error_ratio * 100:g}% of the HTTP responses of {job} are 5xx",
                "Overload (503), a failing engine step or a crash: check the server log and "
                "its /ready.",
            ),
        }[name]
        return {"summary": text[0], "description": text[1]}

    def rules(self) -> list[dict]:
        """Return the alerting rules as Prometheus's rule-file entries."""
        waiting = metric_selector("num_requests_waiting", self.engines)
        exprs = {
            "HighTimeToFirstTokenP95": (
                f"{ttft_quantile(0.95, self.window, ('job',), self.engines)} > {self.ttft_p95_s:g}",
                "warning",
            ),
            "RequestQueueGrowing": (
                f"(sum by (job) (deriv({waiting}[{self.window}])) > 0) and "
                f"(sum by (job) ({waiting}) >= {self.queue_min_waiting})",
                "warning",
            ),
            "HighErrorRatio": (f"{error_ratio(self.window)} > {self.error_ratio:g}", "critical"),
        }
        return [
            {
                "alert": name,
                "expr": expr,
                "for": duration(self.for_s, "for_s", zero_ok=True),
                "labels": {"severity": severity},
                "annotations": self._annotations(name, "{{ $labels.job }}"),
            }
            for name, (expr, severity) in exprs.items()
        ]

    def to_dict(self) -> dict:
        """Return the whole rule file as a dict."""
        return {"groups": [{"name": self.group, "rules": self.rules()}]}

    def yaml(self) -> str:
        """Return the rule file's YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the rule file to path; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.yaml())
        return path

    # ---- their promtool unit tests -----------------------------------------------------

    def tests(self, rule_file: str = "rules.yml") -> dict:
        """Return a promtool test file: each alert fires for a vLLM and a deploykit job, not a third."""
        steps = math.ceil((duration_s(self.window) + self.for_s + 120) / _TEST_INTERVAL_S)
        eval_time = f"{steps * _TEST_INTERVAL_S}s"
        firing = [(f"{engine}-server", engine) for engine in self.engines]
        quiet_job, quiet_engine = "quiet-server", self.engines[-1]
        cases = []
        for name, series in (
            ("HighTimeToFirstTokenP95", self._ttft_series),
            ("RequestQueueGrowing", self._queue_series),
            ("HighErrorRatio", self._error_series),
        ):
            inputs = [s for job, engine in firing for s in series(job, engine, True, steps)]
            inputs += series(quiet_job, quiet_engine, False, steps)
            severity = "critical" if name == "HighErrorRatio" else "warning"
            checks = [
                {
                    "eval_time": eval_time,
                    "alertname": name,
                    "exp_alerts": [
                        {
                            "exp_labels": {"job": job, "severity": severity},
                            "exp_annotations": self._annotations(name, job),
                        }
                        for job, _ in firing
                    ],
                }
            ]
            if self.for_s >= 4 * _TEST_INTERVAL_S:  # true since ~15 s, pending until for_s
                checks.insert(
                    0,
                    {"eval_time": f"{2 * _TEST_INTERVAL_S}s", "alertname": name, "exp_alerts": []},
                )
            cases.append(
                {
                    "interval": f"{_TEST_INTERVAL_S}s",
                    "input_series": inputs,
                    "alert_rule_test": checks,
                }
            )
        return {
            "rule_files": [rule_file],
            "evaluation_interval": f"{_TEST_INTERVAL_S}s",
            "tests": cases,
        }

    def _ttft_series(self, job: str, engine: str, fire: bool, steps: int) -> list[dict]:
        """Histogram buckets whose every observation lies above (fire) or below the threshold."""
        bounds = TIME_TO_FIRST_TOKEN_BUCKETS_S
        if fire:  # the first bucket whose lower bound is at or above the threshold
            upper = next(i for i in range(1, len(bounds)) if bounds[i - 1] >= self.ttft_p95_s)
        else:  # the last bucket whose upper bound is at or below it (none: no quiet series)
            below = [i for i, b in enumerate(bounds) if b <= self.ttft_p95_s]
            if not below:
                return []
            upper = below[-1]
        labels = f'job="{job}", model_name="m", engine="0"'
        out = [
            {
                "series": f'{engine}:time_to_first_token_seconds_bucket{{{labels}, le="{b:g}"}}',
                "values": f"0+{60 if i >= upper else 0}x{steps}",
            }
            for i, b in enumerate(bounds)
        ]
        out.append(
            {
                "series": f'{engine}:time_to_first_token_seconds_bucket{{{labels}, le="+Inf"}}',
                "values": f"0+60x{steps}",
            }
        )
        return out

    def _queue_series(self, job: str, engine: str, fire: bool, steps: int) -> list[dict]:
        """A waiting gauge that grows past the minimum (fire), or stays high but flat."""
        labels = f'job="{job}", model_name="m", engine="0"'
        step = math.ceil(self.queue_min_waiting / steps) + 1
        values = f"0+{step}x{steps}" if fire else f"{self.queue_min_waiting + 5}+0x{steps}"
        return [{"series": f"{engine}:num_requests_waiting{{{labels}}}", "values": values}]

    def _error_series(self, job: str, engine: str, fire: bool, steps: int) -> list[dict]:
        """5xx and 2xx counters whose ratio lies halfway above (fire) or below the threshold."""
        ratio = (1 + self.error_ratio) / 2 if fire else self.error_ratio / 2
        ok_per_step = 1000
        errors_per_step = round(ratio * ok_per_step / (1 - ratio))
        labels = f'job="{job}", handler="/v1/completions", method="POST"'
        return [
            {
                "series": f'http_requests_total{{{labels}, status="5xx"}}',
                "values": f"0+{errors_per_step}x{steps}",
            },
            {
                "series": f'http_requests_total{{{labels}, status="2xx"}}',
                "values": f"0+{ok_per_step}x{steps}",
            },
        ]

    def write_tests(self, folder: str | os.PathLike[str]) -> Path:
        """Write rules.yml and rules_test.yml into folder; return the test file's path."""
        folder = Path(folder)
        self.write(folder / "rules.yml")
        path = folder / "rules_test.yml"
        path.write_text(yaml.safe_dump(self.tests("rules.yml"), sort_keys=False, width=200))
        return path


def prometheus_path(binary: str = "prometheus") -> str:
    """Return the path of a Prometheus binary (prometheus, promtool), or raise saying how to install it."""
    return find_executable(
        binary,
        "On Debian or Ubuntu: `sudo apt-get install prometheus` (it "
        "brings promtool; the service need not run, deploykit starts its own "
        "process); elsewhere download it from https://prometheus.io/download/ "
        "and put it on PATH.",
    )


def _promtool(*args: str | os.PathLike[str], what: str, cwd: str | None = None) -> str:
    """Run promtool (in cwd); return its output, or raise PrometheusError with it."""
    done = subprocess.run(
        [prometheus_path("promtool"), *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise PrometheusError(
            f"promtool rejected {what} (exit code {done.returncode}):\n"
            f"{output}\nFix the file and run `promtool "
            f"{' '.join(os.fspath(a) for a in args)}` again."
        )
    return output


def check_rules(rules: AlertRules | str | os.PathLike[str]) -> str:
    """Run `promtool check rules` on a rule file (or AlertRules); return its report."""
    if isinstance(rules, AlertRules):
        with tempfile.TemporaryDirectory(prefix="deploykit-rules-") as tmp:
            # run where the file is: the report names rules.yml, not a folder that is then gone
            rules.write(Path(tmp, "rules.yml"))
            return _promtool("check", "rules", "rules.yml", what="the generated rules", cwd=tmp)
    return _promtool("check", "rules", rules, what=f"the rule file {os.fspath(rules)}")


def check_config(path: str | os.PathLike[str]) -> str:
    """Run `promtool check config` on a Prometheus config (and the rule files it names)."""
    return _promtool("check", "config", path, what=f"the config {os.fspath(path)}")


def test_rules(tests: AlertRules | str | os.PathLike[str]) -> str:
    """Run `promtool test rules` on a test file, or on AlertRules' generated tests; return its report."""
    if isinstance(tests, AlertRules):
        with tempfile.TemporaryDirectory(prefix="deploykit-rules-") as tmp:
            name = tests.write_tests(tmp).name
            return _promtool("test", "rules", name, what="the rules' unit tests", cwd=tmp)
    return _promtool("test", "rules", tests, what=f"the rule tests {os.fspath(tests)}")


test_rules.__test__ = False  # type: ignore[attr-defined]  # pytest's marker: not a test
