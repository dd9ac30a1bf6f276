"""`deploykit check`: the suite against a real `deploykit serve` in each of its three dialects,
its report (table, JSON, exit status), the key never shown, the pytest plugin, and the
compatibility page."""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading

import pytest
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.check import common, ollama, openai, tgi
from deploykit.check._http import Endpoint, Exchange, redact_url
from deploykit.check.compat import compatibility_doc
from deploykit.check.suite import CheckReport, CheckResult

pytest_plugins = ["pytester"]
KEY = "sk-deploykit-check-secret-1234"


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-check") as srv:
        yield srv


@pytest.fixture(scope="module")
def keyed():
    with start_server("--api-key", KEY, name="serve-check-key") as srv:
        yield srv


# ---- without a server ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [openai.DIALECT, tgi.DIALECT, ollama.DIALECT], ids=str)
def test_each_dialect_has_at_least_20_bad_inputs(dialect):
    names = [b.name for b in dialect.bad_inputs()]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert {"malformed_json", "oversized_body"} <= set(names)


def test_the_key_is_never_shown():
    ep = Endpoint("http://user:pw@127.0.0.1:9", api_key=KEY, api_key_env="MY_KEY")
    assert KEY not in repr(ep) and "pw" not in repr(ep)
    assert ep.hide(f"echo {KEY}!") == "echo $MY_KEY!"
    ex = Exchange("POST", "/v1/completions", '{"prompt": "hi"}', 401)
    line = ep.command(ex)
    assert '"Authorization: Bearer $MY_KEY"' in line and KEY not in line
    assert line.startswith("curl -sS -X POST http://127.0.0.1:9/v1/completions")
    assert redact_url("http://user:pw@host:8000/x") == "http://host:8000/x"
    ep.close()


def test_an_unset_key_variable_stops_the_check_before_any_request(monkeypatch, capsys):
    monkeypatch.delenv("DK_CHECK_NO_SUCH_KEY", raising=False)
    with pytest.raises(dk.MissingCredentialError, match="DK_CHECK_NO_SUCH_KEY"):
        dk.check_endpoint("http://127.0.0.1:9", api_key_env="DK_CHECK_NO_SUCH_KEY")
    from deploykit import cli

    assert cli.main(["check", "http://127.0.0.1:9", "--api-key-env", "DK_CHECK_NO_SUCH_KEY"]) == 2
    assert "unset" in capsys.readouterr().err


def test_nothing_listening_fails_health_and_skips_the_rest():
    report = dk.check_endpoint(f"http://127.0.0.1:{dk.free_port()}", dialect="openai", timeout_s=5)
    assert report.result("health").status == "fail" and report.exit_code == 1
    assert {r.status for r in report.results if r.name != "health"} == {"skip"}


def _report(label: str, statuses: dict[str, tuple[str, int | None]]) -> CheckReport:
    results = tuple(
        CheckResult(
            name,
            "errors" if name.startswith("bad_") else "generation",
            status,
            f"why {name}",
            data={"status": code} if code else {},
        )
        for name, (status, code) in statuses.items()
    )
    return CheckReport(
        "http://127.0.0.1:1", "openai", "m", results, "2026-01-01T00:00:00Z", 1.0, label=label
    )


def test_the_compatibility_page_sets_reports_side_by_side():
    a = _report("A 1.0", {"chat": ("pass", None), "bad_temperature_over_2": ("pass", 400)})
    b = _report("B 2.0", {"chat": ("fail", None), "bad_temperature_over_2": ("warn", 200)})
    again = CheckReport.from_dict(json.loads(b.to_json()))
    assert again.result("chat").status == "fail" and again.label == "B 2.0"
    page = compatibility_doc([a, again])
    assert "| generation | `chat` | pass | **FAIL** |" in page
    assert "| errors | `bad_temperature_over_2` | 400 | 200 warn |" in page
    assert "### B 2.0" in page and "`chat` (fail): why chat" in page
    assert "2026-01-01T00:00:00Z" in page


def test_a_stop_string_is_taken_from_the_answer_itself():
    probe = common.pick_stop("the cat sat on the mat today")
    assert probe is not None and probe.stop in "the cat sat on the mat today"
    assert probe.before == "the cat sat on the mat today"[: len(probe.before)]
    assert common.pick_stop("") is None


# ---- against deploykit serve ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "tgi", "ollama"])
def test_check_passes_on_deploykit_serve(server, dialect):
    report = dk.check_endpoint(server.url, dialect=dialect)
    assert report.ok, report.table(show=("fail",))
    assert report.model in (MODEL, f"{MODEL}:latest")
    assert sum(r.group == "errors" for r in report.results) >= 20
    passed = {r.name for r in report.results if r.status == "pass"}
    assert {"concurrent", "abandoned_stream", "timeouts", "metrics"} <= passed
    if dialect == "tgi":  # the item-4 case: TGI's clients send a placeholder model name
        assert {"chat_model_tgi", "chat_model_dummy", "root_route"} <= passed


def test_a_stream_the_server_goes_on_generating_after_its_client_left_fails():
    # a proxy that ignores client aborts (nginx's proxy_ignore_client_abort on) in front of a
    # real server: the abandoned stream runs on for nobody, and only the running gauge shows it
    # (the server batches, so the next request is not slowed). smollm2-135m: its 1,021 tokens
    # take tens of seconds, more than the check allows (toy-tiny's take under its 5-s floor;
    # toy-small would be trained first, about 10 minutes on a machine that lacks it)
    upstream = start_server(name="serve-check-abort", model="smollm2-135m")
    try:
        with dk.start_fault_proxy(upstream.url) as proxy:
            fine = dk.check_endpoint(proxy.url, only=["abandoned_stream"])
            proxy.inject(ignore_client_abort=True, count=1)
            ignored = dk.check_endpoint(proxy.url, only=["abandoned_stream"])
            stats = proxy.stats()
    finally:
        upstream.stop()
    result = fine.result("abandoned_stream")
    assert result.status == "pass", result
    assert result.data["freed_after_s"] <= result.data["freed_within_s"]
    result = ignored.result("abandoned_stream")
    assert result.status == "fail", result
    assert "keeps generating for nobody" in result.why
    late = result.data.get("freed_after_s")
    assert late is None or late > result.data["freed_within_s"], result.data
    assert stats["faults_by_kind"] == {"ignore_client_abort": 1}
    assert [r["drained_bytes"] > 0 for r in stats["requests"] if r["fault"]] == [True]


def test_the_dialect_is_detected_and_the_table_reads(server):
    report = dk.check_endpoint(server.url, only=["health", "models", "errors"])
    assert report.dialect == "openai" and report.ok
    table = report.table()
    assert table.splitlines()[0].startswith(f"deploykit check {server.url}")
    assert "passed, 0 failed" in table.splitlines()[-1]
    shown = report.result("bad_unknown_model")
    assert shown.data["status"] == 404 and shown.command.startswith("curl -sS -X POST")


def test_a_case_chosen_alone_still_learns_the_models_name(server):
    report = dk.check_endpoint(server.url, only=["chat"])
    assert [r.name for r in report.results] == ["chat"]
    assert report.result("chat").status == "pass", report.result("chat")


def test_the_command_prints_json_writes_it_and_exits_0(server, tmp_path):
    out = tmp_path / "deploykit.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploykit",
            "check",
            server.url,
            "--only",
            "health",
            "generation",
            "--json",
            "--out",
            str(out),
            "--label",
            "deploykit test",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] and data["label"] == "deploykit test" and json.loads(out.read_text()) == data
    page = subprocess.run(
        [sys.executable, "-m", "deploykit", "compat", "table", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert page.returncode == 0 and "| deploykit test |" in page.stdout


def test_a_key_from_the_environment_is_used_and_never_printed(keyed, monkeypatch, tmp_path):
    monkeypatch.setenv("DK_CHECK_KEY", KEY)
    report = dk.check_endpoint(
        keyed.url, api_key_env="DK_CHECK_KEY", only=["health", "models", "generation"]
    )
    assert report.ok, report.table(show=("fail",))
    monkeypatch.setenv("DK_CHECK_KEY", KEY[::-1])  # a wrong key: every model call fails
    wrong = dk.check_endpoint(keyed.url, api_key_env="DK_CHECK_KEY", only=["models", "chat"])
    assert not wrong.ok and wrong.exit_code == 1
    text = wrong.to_json() + wrong.table() + report.to_json()
    assert KEY not in text and KEY[::-1] not in text
    assert "$DK_CHECK_KEY" in wrong.result("models").command


def test_pytest_plugin_runs_the_cases_as_tests(server, pytester):
    # no -p: installing deploykit registers the plugin (pytest11 entry point), as in a team's CI
    pytester.makepyfile(
        """
        def test_my_endpoint(endpoint_report):
            assert endpoint_report.result("health").status == "pass"
        """
    )
    result = pytester.runpytest_subprocess(
        "--endpoint",
        server.url,
        "--endpoint-only",
        "health",
        "models",
        "errors",
        "-q",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] >= 23  # health, models, >= 20 bad inputs, the team's own test


def test_pytest_plugin_reports_a_failing_case_with_its_request(pytester):
    result = pytester.runpytest_subprocess(
        "--endpoint",
        f"http://127.0.0.1:{dk.free_port()}",
        "--endpoint-dialect",
        "openai",
        "--endpoint-only",
        "health",
    )
    result.assert_outcomes(failed=1, skipped=1)  # health fails; readiness is not tried
    assert "curl -sS http://127.0.0.1:" in result.stdout.str()


class _ClosingHandler(socketserver.StreamRequestHandler):
    """Answers a connection's first `answered` requests, then closes it at the next one."""

    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        for _ in range(self.server.answered):  # type: ignore[attr-defined]
            if not self._read_request():
                return
            body = b'{"ok": true}'
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
            )
        self._read_request()  # and close, unanswered

    def _read_request(self) -> bool:
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            pass
        return line == b"\r\n"


@pytest.mark.parametrize("answered", [1, 0])
def test_a_connection_closed_unanswered_is_sent_once_more_then_reported(answered):
    # answered=1: the second request finds its kept-alive connection closed (a server's idle
    # timeout racing it) and goes again on a new one; answered=0: every connection closes
    # unanswered, and the check reports it
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ClosingHandler) as server:
        server.daemon_threads = True
        server.connections, server.answered = 0, answered  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5)
        try:
            replies = [endpoint.send("GET", "/health") for _ in range(2)]
        finally:
            endpoint.close()
            server.shutdown()
    if answered:
        assert [r.status for r in replies] == [200, 200]
        assert server.connections == 2  # type: ignore[attr-defined]
    else:
        assert [r.status for r in replies] == [None, None]
        assert "without sending a response" in replies[0].exchange.answer
        assert server.connections == 4  # type: ignore[attr-defined]  # each tried twice
