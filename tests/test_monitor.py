"""Monitoring: PromQL for both servers, Prometheus config, promtool rules, Grafana, a real Prometheus."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.errors import InvalidArgumentError, MissingExtraError, PrometheusError
from deploykit.monitor.live import LiveTrace, plot_panels
from deploykit.monitor.prom import prometheus_config
from deploykit.monitor.promql import requests_waiting, standard_panels
from deploykit.monitor.rules import prometheus_path

# ---- PromQL that reads vLLM and deploykit alike -------------------------------------------


def test_one_selector_reads_both_engines():
    assert (
        dk.metric_selector("num_requests_waiting")
        == '{__name__=~"(vllm|deploykit):num_requests_waiting"}'
    )
    assert (
        dk.metric_selector("x", engines=("vllm",), job='a"b')
        == '{__name__=~"(vllm):x", job="a\\"b"}'
    )
    assert dk.ttft_quantile(0.95, "1m", by=()) == (
        'histogram_quantile(0.95, sum by (le) (rate({__name__=~"(vllm|deploykit):'
        'time_to_first_token_seconds_bucket"}[1m])))'
    )
    for bad in (
        lambda: dk.metric_selector("vllm:x"),
        lambda: dk.ttft_quantile(95),
        lambda: dk.generation_tokens_per_s("1 minute"),
        lambda: requests_waiting("job"),
    ):
        with pytest.raises(InvalidArgumentError):
            bad()


# ---- the Prometheus config ----------------------------------------------------------------


def test_config_scrapes_any_targets_and_promtool_accepts_it(tmp_path):
    rules = dk.AlertRules().write(tmp_path / "rules.yml")
    config = prometheus_config(
        {
            "deploykit": "http://127.0.0.1:8000",
            "vllm": ["http://127.0.0.1:8001"],
            "llamacpp": "127.0.0.1:8080/metrics",
            "tls": "https://10.0.0.5:443/stats",
        },
        scrape_interval_s=0.5,
        rule_files=[rules],
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["vllm"]["static_configs"][0]["targets"] == ["127.0.0.1:8001"]
    assert jobs["llamacpp"]["metrics_path"] == "/metrics" and jobs["tls"]["scheme"] == "https"
    assert jobs["tls"]["metrics_path"] == "/stats"
    assert config["global"]["scrape_interval"] == "500ms"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [prometheus_path("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for targets in ({}, {"bad job": "http://x:1"}, {"a": "http://no-port"}, {"a": "ftp://h:1"}):
        with pytest.raises(InvalidArgumentError):
            prometheus_config(targets)


def test_a_written_config_names_its_rule_file_relative_to_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as a notebook writes it: paths relative to its folder
    folder = Path("deploy/11_monitoring")
    rules = dk.AlertRules().write(folder / "alert-rules.yml")
    path = dk.write_prometheus_config(
        folder / "prometheus.yml", {"deploykit": "http://deploykit:8000"}, rule_files=[rules]
    )
    config = yaml.safe_load(path.read_text())
    assert config["rule_files"] == ["alert-rules.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["deploykit:8000"]
    monkeypatch.chdir("/")  # promtool reads the rule file relative to the config, from anywhere
    assert "SUCCESS: 1 rule files found" in dk.check_config(tmp_path / path)
    (tmp_path / folder / "alert-rules.yml").unlink()
    with pytest.raises(PrometheusError, match="promtool rejected the config"):
        dk.check_config(tmp_path / path)


def test_a_missing_prometheus_says_how_to_install_it():
    with pytest.raises(MissingExtraError, match="apt-get install prometheus"):
        prometheus_path("prometheus-that-is-not-installed")


# ---- alerting rules and their unit tests ---------------------------------------------------


def test_generated_rules_pass_promtool_check_and_their_tests():
    for rules in (
        dk.AlertRules(),
        dk.AlertRules(
            ttft_p95_s=0.0005, error_ratio=0.5, queue_min_waiting=100, window="30s", for_s=0
        ),
    ):
        checked, tested = dk.check_rules(rules), dk.test_rules(rules)
        assert "SUCCESS: 3 rules found" in checked and "SUCCESS" in tested
        # the reports name the files, not the temporary folder they were checked in
        assert "deploykit-rules-" not in checked + tested and "rules.yml" in checked
        names = [r["alert"] for r in rules.to_dict()["groups"][0]["rules"]]
        assert names == ["HighTimeToFirstTokenP95", "RequestQueueGrowing", "HighErrorRatio"]


def test_rule_tests_catch_rules_that_do_not_match_them(tmp_path):
    # tests generated for a 0.1 s threshold, run against rules with a 100 s one: must fail
    tests = dk.AlertRules(ttft_p95_s=0.1).write_tests(tmp_path)
    dk.AlertRules(ttft_p95_s=100).write(tmp_path / "rules.yml")
    with pytest.raises(PrometheusError, match="HighTimeToFirstTokenP95"):
        dk.test_rules(tests)


def test_a_broken_rule_file_fails_with_promtools_report(tmp_path):
    broken = dk.AlertRules().to_dict()
    broken["groups"][0]["rules"][0]["expr"] = "histogram_quantile(0.95, sum by (le) (rate(x[5m]))"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(PrometheusError) as err:
        dk.check_rules(path)
    message = str(err.value)
    assert "broken.yml" in message and "promtool check rules" in message
    assert "parse error" in message or "unclosed" in message, message
    with pytest.raises(InvalidArgumentError):
        dk.AlertRules(error_ratio=5)


# ---- Grafana ------------------------------------------------------------------------------


def test_grafana_dashboard_has_the_panels_and_a_datasource_variable(tmp_path):
    path = dk.write_grafana_dashboard(tmp_path / "dashboard.json", window="2m")
    board = json.loads(path.read_text())
    titles = [p["title"] for p in board["panels"]]
    assert titles == [p.title for p in standard_panels()]
    assert board["templating"]["list"][0]["type"] == "datasource"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert any("histogram_quantile(0.95" in e for e in exprs)
    assert all("[2m]" in e for e in exprs if "rate(" in e)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


# ---- a real Prometheus over a real deploykit server ---------------------------------------


def test_live_view_keeps_a_colour_per_job_and_a_low_threshold_off_the_axis():
    import pandas as pd

    panels = dk.live_panels("5s")
    assert [p.title for p in panels] == [
        "Generated tokens/s",
        "Time to first token",
        "Requests waiting and running",
    ]
    assert "HTTP 5xx errors/s" in [p.title for p in dk.live_panels("5s", errors=True)]
    t = [0.0, 1.0, 2.0]
    frames = {
        "Generated tokens/s": pd.DataFrame({"deploykit": [0, 50, 60], "vllm": [0, 80, 90]}, t),
        "Time to first token": pd.DataFrame(
            {
                "p50 deploykit": [0.05, 0.06, 0.07],
                "p95 deploykit": [0.1, 0.2, 0.3],
                "p50 vllm": [0.02, 0.03, 0.04],
                "p95 vllm": [0.3, 0.4, 0.5],
            },
            t,
        ),
    }
    fig = plot_panels(frames, panels, thresholds={"Time to first token": 0.001})
    tokens, ttft, queue = fig.axes
    colour = {line.get_label(): line.get_color() for ax in (tokens, ttft) for line in ax.lines}
    assert colour["deploykit"] == colour["p50 deploykit"] == colour["p95 deploykit"]
    assert colour["vllm"] == colour["p95 vllm"] != colour["deploykit"]
    styles = {line.get_label(): line.get_linestyle() for line in ttft.lines}
    assert styles["p50 vllm"] != styles["p95 vllm"]
    low, high = ttft.get_ylim()
    assert ttft.get_yscale() == "log" and low < 0.001 and high > 0.5  # the line clears the axis
    legend = [text.get_text() for text in ttft.get_legend().get_texts()]
    assert "alert threshold (1 ms)" in legend
    assert ttft.get_legend().get_bbox_to_anchor().x0 >= ttft.get_window_extent().x1  # beside
    assert queue.texts[0].get_text() == "no data yet" and ttft.get_ylabel() == "seconds"


def test_prometheus_scrapes_deploykit_and_llamacpp_and_counts_every_request():
    n = 12
    rules = dk.AlertRules(ttft_p95_s=0.0005, window="10s", for_s=0)  # fires on any traffic
    llama_args = dk.LlamaCppArgs(
        model="smollm2-135m", ctx_size=256, n_parallel=1, threads=1, metrics=True
    )
    with ExitStack() as stack:
        # both servers load on one thread each: start them side by side on the two cores
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(dk.start_llamacpp, llama_args, timeout_s=120)
            try:
                srv = stack.enter_context(start_server(name="serve-monitor"))
            finally:
                llama = stack.enter_context(starting.result())
        prom = stack.enter_context(
            dk.start_prometheus(
                {"deploykit": srv, "llamacpp": llama}, rules=rules, scrape_interval_s=1
            )
        )
        assert prom.targets()["health"].tolist() == ["up", "up"]
        load, trace = dk.watch_live(
            prom,
            lambda: dk.run_load(
                srv.url, dk.LoadSpec(model=MODEL, max_tokens=8), num_requests=n, concurrency=4
            ),
        )
        assert load.num_ok == n
        llama_load = dk.run_load(
            llama.url, dk.LoadSpec(model=llama_args.served_name, max_tokens=4), num_requests=1
        )
        assert llama_load.num_ok == 1
        prom.wait_for_scrape()
        assert prom.value("sum(llamacpp:tokens_predicted_total)") == 4
        assert prom.value("sum(deploykit:request_success_total)") == n
        assert prom.value('sum(http_requests_total{handler="/v1/completions"})') == n
        assert (
            prom.value("sum(" + dk.metric_selector("e2e_request_latency_seconds_count") + ")") == n
        )
        assert prom.value("sum(deploykit:generation_tokens_total)") == n * 8
        firing = prom.wait_for_alert("HighTimeToFirstTokenP95", timeout_s=20)
        assert firing["job"].tolist() == ["deploykit"]
        assert prom.wait_for_alert("HighTimeToFirstTokenP95", jobs="deploykit")["job"].tolist() == [
            "deploykit"
        ]
        with pytest.raises(PrometheusError, match=r"not firing for jobs \['deploykit', 'nosuch'\]"):
            prom.wait_for_alert(
                "HighTimeToFirstTokenP95", timeout_s=1, jobs=["deploykit", "nosuch"]
            )
        for panel in dk.grafana_dashboard()["panels"]:  # every dashboard query is valid PromQL
            for target in panel["targets"]:
                prom.query(target["expr"])
        assert trace.peak("Generated tokens/s") > 0
        replay = dk.replay_live(prom, trace, "3s", panels=["Generated tokens/s"])
        (ax,) = replay.axes
        assert ax.get_title(loc="left") == "Generated tokens/s"
        assert "generation_tokens_total" in replay.texts[-1].get_text()
        assert "[3s]" in replay.texts[-1].get_text()
        assert "rate window 3s" in replay._suptitle.get_text()
        assert max(max(line.get_ydata()) for line in ax.get_lines()) > 0  # the load, read again
        # until now by default: past the end of the watch, where what followed the load shows
        assert max(ax.get_lines()[0].get_xdata()) >= trace.end_s - trace.start_s - 1
        with pytest.raises(PrometheusError, match="parse error"):
            prom.query("sum(")
        folder = prom.folder
    assert not any(s.is_running() for s in (prom.server, srv, llama)) and not folder.exists()


def test_replay_refuses_a_panel_the_live_view_does_not_have_before_any_query():
    trace = LiveTrace(dk.live_panels("5s"), start_s=0.0, end_s=10.0)
    with pytest.raises(InvalidArgumentError, match="'Generated tokens/s'"):
        dk.replay_live(None, trace, "5s", panels=["Tokens"])  # no Prometheus is asked
    with pytest.raises(InvalidArgumentError, match="not a PromQL duration"):
        dk.replay_live(None, trace, "5 s")


def test_plot_trace_splits_units_into_panels_and_marks_every_sample():
    from deploykit.monitor.scrape import MetricsTrace

    trace = MetricsTrace(
        (0.0, 0.5, 1.0), {"kv": (0.0, 1.0, 0.5), "run": (0, 3, 1), "wait": (0, 5, 0)}
    )
    fig = dk.plot_trace(
        trace,
        {"kv": "KV cache used", "run": "running", "wait": "waiting"},
        scale={"kv": 100},
        units={"kv": "KV cache used (%)", "run": "requests", "wait": "requests"},
    )
    top, bottom = fig.axes
    assert top.get_ylabel() == "KV cache used (%)" and bottom.get_ylabel() == "requests"
    assert list(top.get_lines()[0].get_ydata()) == [0.0, 100.0, 50.0]
    assert {ln.get_drawstyle() for ax in fig.axes for ln in ax.get_lines()} == {"steps-post"}
    assert "3 samples" in bottom.get_xlabel()


# ---- the live view in a kernel ------------------------------------------------------------

LIVE_CELL = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from deploykit.monitor.live import _LiveWidget
live = _LiveWidget()
fig, ax = plt.subplots(); ax.plot([0, 1]); live.show(fig, "running for 1 s")
fig, ax = plt.subplots(); ax.plot([1, 0]); live.finish(fig, "finished: 1 refreshes over 2 s")
"""


def test_the_live_view_keeps_its_last_figure_in_saved_widget_state(tmp_path):
    """What an executed notebook 11 holds: the widget's state with the final figure."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LIVE_CELL)])
    client = NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120)
    client.resources = {"metadata": {"path": str(tmp_path)}}
    client.execute()
    [display] = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    view = display.data["application/vnd.jupyter.widget-view+json"]
    assert "finished: 1 refreshes over 2 s" in display.data["text/plain"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    box = state[view["model_id"]]
    assert box["model_name"] == "VBoxModel"
    status, output = (state[ref.removeprefix("IPY_MODEL_")] for ref in box["state"]["children"])
    assert status["state"]["value"] == "finished: 1 refreshes over 2 s"
    [shown] = output["state"]["outputs"]  # the last figure only; the running one was cleared
    assert shown["data"]["image/png"].startswith("iVBORw0KGgo")  # a PNG, base64
