"""Hosted endpoints: the platform table, the cost arithmetic, Bedrock requests, Replicate over HTTP."""

from __future__ import annotations

import http.server
import json
import math
import threading

import pytest

import deploykit as dk
from deploykit.hosted.bedrock import bedrock_client, converse_text, converse_usage
from deploykit.hosted.costs import (
    GPUPrice,
    TokenPrice,
    hosted_cost_per_day,
    self_hosted_cost_per_day,
    token_price,
)
from deploykit.hosted.platforms import DIALECTS, KINDS, Platform
from deploykit.hosted.replicate import prediction_text, send_prediction

# A made-up price with round numbers, so the expected values can be worked by hand.
P = TokenPrice("test", "round-numbers", 0.15, 0.60, "https://example.test/pricing", "2026-11-27")


# ---- the comparison as data --------------------------------------------------------------------


def test_platform_table_has_the_six_and_their_notebooks():
    df = dk.platform_table()
    assert list(df["name"]) == ["vLLM", "TGI", "Ollama", "OpenAI", "AWS Bedrock", "Replicate"]
    assert dict(zip(df["name"], df["notebook"])) == {
        "vLLM": "03_vllm_server",
        "TGI": "04_tgi",
        "Ollama": "05_ollama",
        "OpenAI": "06_cloud_endpoints",
        "AWS Bedrock": "06_cloud_endpoints",
        "Replicate": "06_cloud_endpoints",
    }
    assert set(df["kind"]) == set(KINDS) and set(df["dialect"]) == set(DIALECTS)
    tgi = df.set_index("name").loc["TGI"]
    assert "maintenance mode" in tgi["status"] and "December 2025" in tgi["status"]
    assert (df.set_index("name").drop("TGI")["status"] == "active").all()


def test_platform_table_filters():
    assert list(dk.platform_table(kind="self-hosted")["name"]) == ["vLLM", "TGI", "Ollama"]
    assert list(dk.platform_table(kind="hosted", dialect="openai")["name"]) == ["OpenAI"]
    assert list(dk.platform_table(dialect="openai")["name"]) == ["vLLM", "OpenAI"]
    assert dk.platform_table(kind="self-hosted", dialect="bedrock-converse").empty
    with pytest.raises(dk.InvalidArgumentError, match="self-hosted, hosted"):
        dk.platform_table(kind="cloud")
    with pytest.raises(dk.InvalidArgumentError, match="bedrock-converse"):
        dk.platform_table(dialect="grpc")


def test_platform_rejects_unknown_choices():
    with pytest.raises(dk.InvalidArgumentError, match="dialect"):
        Platform("x", "hosted", "soap", "c", "s", "l", "b", "s", "06_cloud_endpoints")
    with pytest.raises(dk.InvalidArgumentError, match="03_vllm_server"):
        Platform("x", "hosted", "openai", "c", "s", "l", "b", "s", "cloud.ipynb")


def test_platform_browser_filters_its_output():
    ui = dk.platform_browser(dk.platform_table())
    (kind_box, dialect_box), out = ui.children[0].children, ui.children[1]

    def shown() -> str:
        return out.outputs[0]["data"]["text/html"]

    assert all(name in shown() for name in ("vLLM", "Ollama", "Replicate"))
    kind_box.value = "hosted"
    assert "Replicate" in shown() and "vLLM" not in shown()
    dialect_box.value = "openai"
    assert "OpenAI" in shown() and "Replicate" not in shown()
    kind_box.value = "(all)"
    assert "vLLM" in shown() and "AWS Bedrock" not in shown()
    # a saved notebook shows the text form: it says what the widget is, not VBox(children=...)
    text = ui._repr_mimebundle_()["text/plain"]
    assert text.startswith("platform browser") and "VBox" not in text
    with pytest.raises(dk.InvalidArgumentError, match="kind and dialect"):
        dk.platform_browser(dk.platform_table()[["name"]])


# ---- price tables ------------------------------------------------------------------------------


def test_price_tables_are_sourced_and_dated():
    assert dk.PRICES and dk.GPU_PRICES
    for row in (*dk.PRICES, *dk.GPU_PRICES):
        assert row.source_url.startswith("https://") and row.as_of >= "2026-01-01"
    assert token_price("GPT-4o-mini").output_usd_per_mtok == 0.60
    assert dk.gpu_price("a100 80gb").usd_per_hour == 5.04
    yours = dk.gpu_price("A100 80GB", usd_per_hour=2.5)
    assert yours.usd_per_hour == 2.5 and "your own price" in yours.note and "5.04" in yours.note
    with pytest.raises(dk.InvalidArgumentError, match="gpt-4o-mini"):
        token_price("gpt-99")
    with pytest.raises(dk.InvalidArgumentError, match="H100 80GB"):
        dk.gpu_price("TPU v5e")


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenPrice("x", "m", 0, 1, "https://x.test", "2026-11-27"),
        lambda: TokenPrice("x", "m", 1, -2, "https://x.test", "2026-11-27"),
        lambda: TokenPrice("x", "m", 1, 2, "https://x.test", "last week"),
        lambda: GPUPrice("x", "g", float("nan"), "https://x.test", "2026-11-27"),
    ],
)
def test_bad_prices_are_refused(make):
    with pytest.raises(dk.InvalidArgumentError, match="must be"):
        make()


# ---- costs, worked by hand ---------------------------------------------------------------------


def test_hosted_cost_per_day():
    # 1M input x $0.15/M + 1M output x $0.60/M = $0.75
    assert hosted_cost_per_day(P, 1_000_000, 1_000_000) == pytest.approx(0.75)
    # 3M in, 1M out: 0.45 + 0.60 = $1.05; the blended price per million output tokens agrees
    assert hosted_cost_per_day(P, 3_000_000, 1_000_000) == pytest.approx(1.05)
    assert P.usd_per_mtok_output(3.0) == pytest.approx(1.05)
    assert hosted_cost_per_day("gpt-4o-mini", 0, 0) == 0


def test_one_gpu_always_on_costs_24_hours():
    # $1.00/h x 24 h = $24/day whatever the volume; 100 tok/s x 86,400 s = 8.64M tokens/day
    for volume in (0, 1_000, 8_640_000):
        cost = self_hosted_cost_per_day(1.0, 100, volume)
        assert (cost.usd_per_day, cost.gpus) == (pytest.approx(24.0), 1)
        assert cost.capacity_tokens_per_day == pytest.approx(8_640_000)


def test_volume_beyond_one_gpu_needs_two():
    # 10M tokens/day > 8.64M per GPU -> ceil(10 / 8.64) = 2 GPUs -> $48/day always on;
    # pay-per-use: 10M / 100 tok/s = 100,000 s = 27.78 GPU-hours -> $27.78, still 2 GPUs at once
    on = self_hosted_cost_per_day(1.0, 100, 10_000_000)
    assert (on.gpus, on.usd_per_day, on.gpu_hours_per_day) == (2, pytest.approx(48.0), 48.0)
    used = self_hosted_cost_per_day(1.0, 100, 10_000_000, always_on=False)
    assert used.gpus == 2 and used.usd_per_day == pytest.approx(100_000 / 3600)
    # utilization 0.5 halves what a GPU serves: 4.32M/day, so 10M needs ceil(2.31) = 3 GPUs
    assert self_hosted_cost_per_day(1.0, 100, 10_000_000, utilization=0.5).gpus == 3


def test_break_even_worked_by_hand():
    # 1:1, hosted = $0.15 + $0.60 = $0.75 per million output tokens. GPU $1/h at 1000 tok/s:
    # $24/day buys 24 / 0.75 = 32M tokens/day of hosted output; one GPU serves 86.4M -> 32M.
    assert dk.break_even(P, 1.0, 1000, input_output_ratio=1) == pytest.approx(32_000_000)
    at = dict(input_tokens_per_day=32e6, output_tokens_per_day=32e6)
    assert hosted_cost_per_day(P, **at) == pytest.approx(24.0)
    # 3:1 -> $1.05 per million output tokens: 24 / 1.05 = 22.857M tokens/day
    assert dk.break_even(P, 1.0, 1000, input_output_ratio=3) == pytest.approx(24 / 1.05 * 1e6)
    # half the measured rate on average still fits 32M (43.2M capacity): same crossing
    assert dk.break_even(P, 1.0, 1000, input_output_ratio=1, utilization=0.5) == pytest.approx(
        32_000_000
    )


def test_break_even_never():
    # GPU $1/h at 100 tok/s: full capacity 8.64M/day would cost 8.64 x $0.75 = $6.48 hosted,
    # far below the GPU's $24/day, and more GPUs only add cost: never.
    assert dk.break_even(P, 1.0, 100, input_output_ratio=1) is None
    # exactly equal at full capacity is not cheaper: 24 / 0.75 = 32M = capacity at 370.37 tok/s
    assert dk.break_even(P, 1.0, 32e6 / 86_400, input_output_ratio=1) is None


def test_break_even_pay_per_use():
    # pay-per-use GPU at 1000 tok/s: $1 / 3.6M tokens = $0.278/M < $0.75/M -> cheaper from 0
    assert dk.break_even(P, 1.0, 1000, input_output_ratio=1, always_on=False) == 0.0
    # at 100 tok/s: $2.78/M > $0.75/M -> never
    assert dk.break_even(P, 1.0, 100, input_output_ratio=1, always_on=False) is None


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: self_hosted_cost_per_day(0, 100, 1e6), "gpu_hourly_usd"),
        (lambda: self_hosted_cost_per_day(1.0, -5, 1e6), "output_tokens_per_s"),
        (lambda: self_hosted_cost_per_day(1.0, 100, -1), "output_tokens_per_day"),
        (lambda: self_hosted_cost_per_day(1.0, 100, 1e6, utilization=1.5), "utilization"),
        (lambda: hosted_cost_per_day(P, float("inf"), 0), "input_tokens_per_day"),
        (lambda: dk.break_even(P, 1.0, 100, input_output_ratio=-3), "input_output_ratio"),
    ],
)
def test_bad_inputs_say_what_to_pass(call, word):
    with pytest.raises(dk.InvalidArgumentError, match=word):
        call()


def test_break_even_table_rows_match_break_even():
    rates = {"L40S 48GB": 1500, "T4 16GB": 200}
    df = dk.break_even_table(rates, input_output_ratio=1)
    assert len(df) == len(dk.PRICES) * 2 and set(df["gpu"]) == set(rates)
    for row in df.itertuples():
        expected = dk.break_even(
            row.model, dk.gpu_price(row.gpu), rates[row.gpu], input_output_ratio=1
        )
        if expected is None:
            assert math.isnan(row.break_even_output_tokens_per_day) and not row.breaks_even
        else:
            assert row.break_even_output_tokens_per_day == pytest.approx(expected)
        assert row.capacity_tokens_per_day == pytest.approx(rates[row.gpu] * 86_400)
    # T4 at 200 tok/s against gpt-4o-mini 1:1: 17.28M/day x $0.75/M = $12.96 < $0.81 x 24 = $19.44
    t4 = df[(df["gpu"] == "T4 16GB") & (df["model"] == "gpt-4o-mini")].iloc[0]
    assert not t4.breaks_even and t4.hosted_usd_per_day_at_capacity == pytest.approx(12.96)


def test_plot_break_even_marks_the_crossings():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    never = TokenPrice("test", "cheap", 0.01, 0.02, "https://example.test", "2026-11-27")
    fig = dk.plot_break_even([P, never], 1.0, 1000, input_output_ratio=1)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    marks = [c.get_offsets() for c in ax.collections]
    assert len(marks) == 1 and marks[0][0][0] == pytest.approx(32e6)  # only P breaks even
    assert len(ax.get_lines()) == 4  # self-hosted, two hosted, the capacity line
    plt.close(fig)


def test_plot_break_even_says_where_the_rate_comes_from():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = dk.plot_break_even(P, 1.0, 1517.54, input_output_ratio=1, rate_note="published figure")
    label = fig.axes[0].get_lines()[0].get_label()
    assert "1,518 tok/s (published figure)" in label
    plt.close(fig)


# ---- which rate prices a GPU -------------------------------------------------------------------


def test_published_gpu_rates_are_sourced_and_join_the_gpu_prices():
    assert dk.GPU_THROUGHPUTS
    priced = {g.gpu for g in dk.GPU_PRICES}
    for row in dk.GPU_THROUGHPUTS:
        assert row.gpu in priced and row.source_url.startswith("https://")
        assert row.published and row.conditions and row.output_tokens_per_s > 0
    with pytest.raises(dk.InvalidArgumentError, match="output_tokens_per_s"):
        dk.GPUThroughput("A100 80GB", "m", 0, "e", "c", "p", "t", "https://x", "2024", "2026-12-03")


def test_a_cpu_rate_never_prices_a_gpu():
    rate = dk.self_hosted_rate("a100 80gb", 42.0, device="cpu")
    assert not rate.measured and rate.reference is not None
    assert rate.output_tokens_per_s == rate.reference.output_tokens_per_s != 42.0
    assert "published figure" in rate.source
    with pytest.raises(dk.InvalidArgumentError, match="no published rate for 'T4 16GB'"):
        dk.self_hosted_rate("T4 16GB", 42.0, device="cpu")


def test_break_even_view_and_findings_say_never_instead_of_nan():
    rates = {"A100 80GB": 1500.0, "T4 16GB": 200.0}
    df = dk.break_even_table(rates, input_output_ratio=1)
    view = dk.break_even_view(df)
    assert len(view) == len(df) and "nan" not in view.to_string().lower()
    assert max(len(line) for line in view.to_string(index=False).splitlines()) <= 100
    t4 = view[(view["GPU"] == "T4 16GB") & (view["hosted model"] == "openai gpt-4o-mini")]
    assert t4["break-even/day"].tolist() == ["never"]
    rate = dk.self_hosted_rate("A100 80GB", 42.0, device="cpu")
    findings = dk.break_even_findings(df, rate)
    assert len(findings.lines) == len(df) + 1 and "not measured here" in findings.lines[0]
    assert any("never breaks even" in line for line in findings.lines)
    assert any("self-hosting is cheaper above" in line for line in findings.lines)
    with pytest.raises(dk.InvalidArgumentError, match="break_even_table"):
        dk.break_even_view(df[["model"]])


def test_a_rate_measured_on_a_gpu_prices_it():
    rate = dk.self_hosted_rate("T4 16GB", 900.0, device="cuda", what="toy-tiny, 32 clients")
    assert rate.measured and rate.output_tokens_per_s == 900.0 and rate.reference is None
    assert rate.source.startswith("measured in this run on") and "toy-tiny" in rate.source


# ---- Bedrock: the request validates against botocore's service model -------------------------


def _bedrock():
    boto3 = pytest.importorskip("boto3")
    # dummy credentials, here only: the Stubber answers before anything leaves the process
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


CONVERSE_RESPONSE = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [{"text": "Paris"}, {"text": " is the capital."}],
        }
    },
    "stopReason": "end_turn",
    "usage": {"inputTokens": 21, "outputTokens": 6, "totalTokens": 27},
    "metrics": {"latencyMs": 180},
}


def test_converse_request_passes_the_service_model():
    from botocore.stub import Stubber

    client = _bedrock()
    request = dk.converse_request(
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]},
        ],
        system="Be brief.",
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
    )
    assert request == {
        "modelId": "anthropic.claude-haiku-4-5-20251001-v1:0",
        "messages": [
            {"role": "user", "content": [{"text": "Capital of France?"}]},
            {"role": "assistant", "content": [{"text": "Paris."}]},
            {"role": "user", "content": [{"text": "And of Italy?"}]},
        ],
        "system": [{"text": "Be brief."}, {"text": "Answer in one line."}],
        "inferenceConfig": {
            "maxTokens": 64,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["\n\n"],
        },
    }
    with Stubber(client) as stub:
        stub.add_response("converse", CONVERSE_RESPONSE, expected_params=request)
        response = client.converse(**request)  # botocore validates the params here
        stub.assert_no_pending_responses()
    assert converse_text(response) == "Paris is the capital."
    assert converse_usage(response) == {
        "input_tokens": 21,
        "output_tokens": 6,
        "total_tokens": 27,
        "stop_reason": "end_turn",
        "latency_ms": 180,
    }


def test_converse_request_minimal_and_botocore_would_catch_a_bad_one():
    from botocore.exceptions import ParamValidationError
    from botocore.stub import Stubber

    client = _bedrock()
    request = dk.converse_request("meta.llama3-1-8b-instruct-v1:0", "Hello")
    assert request == {
        "modelId": "meta.llama3-1-8b-instruct-v1:0",
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
    }
    with Stubber(client) as stub:
        stub.add_response("converse", CONVERSE_RESPONSE, expected_params=request)
        client.converse(**request)
        # the same Stubber refuses a request that does not fit the model: the check is real
        stub.add_response("converse", CONVERSE_RESPONSE)
        with pytest.raises(ParamValidationError):
            client.converse(**{**request, "inferenceConfig": {"maxTokens": 0}})


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(messages=[]), "start with a user"),
        (dict(messages=[{"role": "assistant", "content": "hi"}]), "start with a user"),
        (dict(messages=[{"role": "tool", "content": "x"}]), "role"),
        (dict(messages="hi", temperature=1.5), "temperature"),
        (dict(messages="hi", top_p=-0.1), "top_p"),
        (dict(messages="hi", max_tokens=0), "max_tokens"),
        (dict(messages="hi", stop=[""]), "stop"),
        (dict(messages=[{"role": "user", "content": ""}]), "empty"),
    ],
)
def test_converse_request_refuses_what_bedrock_would(kwargs, word):
    with pytest.raises(dk.InvalidArgumentError, match=word):
        dk.converse_request("meta.llama3-1-8b-instruct-v1:0", **kwargs)


def test_bedrock_client_without_credentials(monkeypatch, tmp_path):
    pytest.importorskip("boto3")
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup
    with pytest.raises(dk.MissingCredentialError, match="AWS_ACCESS_KEY_ID"):
        bedrock_client("us-east-1")
    assert bedrock_client("us-east-1", require_credentials=False).meta.region_name == "us-east-1"


# ---- Replicate: a real HTTP round trip to a loopback server ------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Record each POST and answer like Replicate's synchronous prediction."""

    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "json": body})
        status = 401 if self.headers.get("Authorization") != "Bearer r8_test_token" else 201
        answer = {
            "id": "p1",
            "status": "succeeded",
            "error": None,
            "output": ["Hel", "lo", "!"],
            "urls": {"get": "http://x/p1"},
        }
        data = json.dumps(answer if status == 201 else {"detail": "Unauthenticated"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def replicate_server():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Recorder.seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_replicate_prediction_round_trip(replicate_server, monkeypatch):
    base_url, seen = replicate_server
    monkeypatch.setenv("TEST_REPLICATE_TOKEN", "r8_test_token")
    request = dk.prediction_request(
        "meta/meta-llama-3-8b-instruct",
        {"prompt": "Say hello", "max_tokens": 8},
        base_url=base_url,
        api_token_env="TEST_REPLICATE_TOKEN",
    )
    assert "r8_test_token" not in repr(request) and "Authorization" in repr(request)
    prediction = send_prediction(request, timeout_s=10)
    assert prediction_text(prediction) == "Hello!"
    (got,) = seen
    assert got["path"] == "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    assert got["headers"]["Authorization"] == "Bearer r8_test_token"
    assert got["headers"]["Prefer"] == "wait"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["json"] == {"input": {"prompt": "Say hello", "max_tokens": 8}}


def test_replicate_versioned_and_streaming_requests(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_other")
    version = "a" * 64
    request = dk.prediction_request(f"replicate/hello-world:{version}", {"text": "hi"}, stream=True)
    assert request.url == "https://api.replicate.com/v1/predictions"
    assert request.json == {
        "version": f"replicate/hello-world:{version}",
        "input": {"text": "hi"},
        "stream": True,
    }
    assert "Prefer" not in request.headers


def test_replicate_wrong_token_is_an_http_error(replicate_server, monkeypatch):
    import httpx

    base_url, _ = replicate_server
    monkeypatch.setenv("TEST_REPLICATE_TOKEN", "r8_wrong_value")
    request = dk.prediction_request(
        "meta/meta-llama-3-8b-instruct",
        {"prompt": "x"},
        base_url=base_url,
        api_token_env="TEST_REPLICATE_TOKEN",
    )
    with pytest.raises(httpx.HTTPStatusError) as err:
        send_prediction(request, timeout_s=10)
    assert err.value.response.status_code == 401 and "r8_wrong_value" not in str(err.value)


def test_replicate_missing_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(dk.MissingCredentialError, match="REPLICATE_API_TOKEN") as err:
        dk.prediction_request("meta/meta-llama-3-8b-instruct", {"prompt": "x"})
    assert "export REPLICATE_API_TOKEN=..." in str(err.value)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "")  # empty counts as missing
    with pytest.raises(dk.MissingCredentialError):
        dk.prediction_request("meta/meta-llama-3-8b-instruct", {"prompt": "x"})


@pytest.mark.parametrize("model", ["llama3", "meta/", "meta/llama:v1", "https://replicate.com/x"])
def test_replicate_model_names_are_checked(model, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_x")
    with pytest.raises(dk.InvalidArgumentError, match="owner/name"):
        dk.prediction_request(model, {"prompt": "x"})


def test_prediction_text_refuses_an_unfinished_prediction():
    with pytest.raises(dk.InvalidArgumentError, match="poll urls.get"):
        prediction_text({"id": "p2", "status": "starting", "output": None})


def test_replicate_request_shape_without_a_token_is_never_sent(replicate_server, monkeypatch):
    base_url, seen = replicate_server
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    request = dk.prediction_request(
        "meta/meta-llama-3-8b-instruct", {"prompt": "Hi"}, base_url=base_url, require_token=False
    )
    assert "Authorization" not in request.headers and request.json == {"input": {"prompt": "Hi"}}
    assert "REPLICATE_API_TOKEN" in repr(request)
    with pytest.raises(dk.MissingCredentialError, match="REPLICATE_API_TOKEN"):
        send_prediction(request)
    assert seen == []  # nothing reached the server
