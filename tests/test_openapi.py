"""`deploykit serve`'s /openapi.json describes its API: bodies, errors, and limits that hold.

The routes read raw bodies (for the 413 limit), so the document declares them by hand from
the wire models; schemathesis then fuzzes a real server against that document.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import schemathesis
from _servers import MODEL, start_server

# Each check is one way the document and the server could disagree. positive_data_acceptance
# is left out: no JSON schema can say "prompt tokens + max_tokens <= context length" (it needs
# the tokenizer), so a schema-valid request can be a 400 that says how to shorten it.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
)
MAX_EXAMPLES = 50  # per operation in the fuzzing phase; the coverage phase adds its own cases
# The costliest request the server allows (all 2048 tokens of context, ignore_eos) takes
# ~15 s on one CPU thread; most fuzzed requests stop after 16 tokens or at EOS, and a run
# takes about a minute on 2 cores. A run past RUN_TIMEOUT_S fails: schemathesis's --max-time
# would instead time-box it, always spending the whole budget and cutting cases short.
REQUEST_TIMEOUT_S = 60
# a guard against a hang, not a speed check: a busy 2-core machine took over 150 s
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-openapi") as srv:
        yield srv


@pytest.fixture(scope="module")
def doc(server) -> dict:
    return httpx.get(server.url + "/openapi.json", timeout=30).json()


def body_schema(doc: dict, path: str) -> dict:
    media = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return doc["components"]["schemas"][media["schema"]["$ref"].rsplit("/", 1)[1]]


def refs(node) -> set[str]:
    """Return every $ref under node."""
    if isinstance(node, list):
        return set().union(*map(refs, node))
    if not isinstance(node, dict):
        return set()
    found = set().union(*map(refs, node.values()))
    return found | {node["$ref"]} if "$ref" in node else found


def test_document_is_valid_openapi(doc):
    schemathesis.openapi.from_dict(doc).validate()  # raises on a document that is not OpenAPI
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    assert {r.rsplit("/", 1)[1] for r in refs(doc)} <= set(schemas)  # every $ref resolves


def test_request_bodies_come_from_the_wire_models(doc):
    completion = body_schema(doc, "/v1/completions")
    chat = body_schema(doc, "/v1/chat/completions")
    assert set(completion["required"]) == {"model", "prompt"}
    assert set(chat["required"]) == {"model", "messages"}
    for field in ("max_tokens", "temperature", "top_p", "stop", "stream", "seed"):
        assert field in completion["properties"] and field in chat["properties"]
    assert "max_completion_tokens" in chat["properties"] and "echo" in completion["properties"]
    message = doc["components"]["schemas"]["ChatMessage"]
    assert message["properties"]["role"]["enum"][:3] == ["system", "user", "assistant"]
    assert body_schema(doc, "/tokenize")["oneOf"]  # a prompt or messages, not both


def test_server_limits_are_written_in(doc, server, tiny):
    context = httpx.get(server.url + "/v1/models").json()["data"][0]["max_model_len"]
    completion = body_schema(doc, "/v1/completions")
    # the served name, and the placeholders TGI's clients send (TGI accepts any name)
    assert completion["properties"]["model"]["enum"] == [MODEL, "tgi", "dummy"]
    max_tokens, _null = completion["properties"]["max_tokens"]["anyOf"]
    assert max_tokens["minimum"] == 1 and max_tokens["maximum"] == context - 1
    token_ids = completion["properties"]["prompt"]["anyOf"][1]
    assert token_ids["items"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": len(tiny.tokenizer) - 1,
    }
    assert "x-deploykit-limit" not in json.dumps(doc)


def test_errors_are_declared_as_they_occur(doc):
    for path in ("/v1/completions", "/v1/chat/completions"):
        responses = doc["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "400", "404", "413", "503"}  # never FastAPI's 422
        assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
        for status in ("400", "404", "413", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
        assert "Retry-After" in responses["503"]["headers"]
    assert set(doc["paths"]["/tokenize"]["post"]["responses"]) == {"200", "400", "404", "413"}
    assert set(doc["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}
    assert "securitySchemes" not in doc["components"]  # this server takes no API key
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_schemathesis_finds_no_server_error_or_mismatch(server, doc, tmp_path):
    report_path = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        server.url + "/openapi.json",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--checks",
        ",".join(CHECKS),
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        # one worker: hypothesis in several threads trips a CPython 3.11 AST bug
        # ("AST constructor recursion depth mismatch"); shrinking would replay slow cases
        "--workers",
        "1",
        "--no-shrink",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report_path),
        "--no-color",
    ]
    try:  # in tmp_path: schemathesis writes caches into the working directory
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"schemathesis did not finish within {RUN_TIMEOUT_S} s")
    assert report_path.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    why = f"seed {report['seed']}:\n{run.stdout[-6000:]}"
    assert report["complete"] and report["stop_reason"] == "completed", why
    assert report["operations"]["tested"] == sum(map(len, doc["paths"].values())), why
    assert report["test_cases"]["generated"] >= 100, why
    assert report["failures"] == [] and report["errors"] == [], why  # no 5xx, no mismatch
    assert report["test_cases"]["errored"] == 0, why  # no request timed out
    assert {"coverage", "fuzzing"} <= {
        name for name, phase in report["phases"].items() if phase["status"] == "success"
    }, why
    # schemathesis warns when the server rejects most of what the schema allows
    assert not report["warnings"].get("validation_mismatch"), why
    assert run.returncode == 0, why
