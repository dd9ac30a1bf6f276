"""deploykit's checks in a team's own pytest run: `pytest --endpoint URL`.

Registered as a pytest plugin (the `pytest11` entry point `deploykit`), so installing
deploykit is enough. Without --endpoint it adds nothing but its options. With it, each case
of the suite becomes one test item (`deploykit-check::<dialect>::<case>`), which passes, fails
with why and the curl line that shows it, or is skipped; a warning passes and is reported.

    pytest --endpoint http://127.0.0.1:8000
    pytest --endpoint https://my.endpoint --endpoint-api-key-env MY_KEY --endpoint-only errors

The fixture `endpoint_report` runs the whole suite once and hands the report to a test of
your own; `endpoint_url` gives the URL. The seed's template, generalized:

    def test_endpoint_is_healthy(endpoint_report):
        assert endpoint_report.result("health").status == "pass"
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from ._case import Context
from .suite import DIALECTS, check_endpoint, run_case

ITEM_PREFIX = "deploykit-check"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deploykit", "deploykit endpoint checks")
    group.addoption("--endpoint", help="run deploykit's checks against this endpoint URL")
    group.addoption("--endpoint-dialect", choices=DIALECTS, help="its API (default: detected)")
    group.addoption("--endpoint-model", help="model name to send (default: the first listed)")
    group.addoption(
        "--endpoint-api-key-env", metavar="VAR", help="environment variable holding the key"
    )
    group.addoption("--endpoint-only", nargs="+", metavar="NAME", help="cases or groups to run")
    group.addoption("--endpoint-timeout-s", type=float, default=30.0, help="per-request time limit")


class _CaseItem(pytest.Item):
    """One case of the suite, run against the endpoint when pytest runs the item."""

    def __init__(self, *, case, shared: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case, self.shared = case, shared

    def runtest(self) -> None:
        ctx: Context = self.shared["context"]
        result = run_case(ctx, self.case)
        self.user_properties.append(("deploykit_check", result.to_dict()))
        if result.status == "skip":
            pytest.skip(result.why)
        if result.status == "warn":
            warnings.warn(f"{self.case.name}: {result.why}", UserWarning, stacklevel=1)
        if result.status == "fail":
            raise _CaseFailed(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, _CaseFailed):
            r = excinfo.value.result
            lines = [f"{r.name}: {r.why}"]
            if r.command:
                lines.append(f"request: {r.command}")
            if r.exchange is not None:
                lines.append(f"answer:  {r.exchange.status} {r.exchange.answer[:300]}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{ITEM_PREFIX}::{self.name}"


class _CaseFailed(Exception):
    def __init__(self, result) -> None:
        super().__init__(result.why)
        self.result = result


class _EndpointCollector(pytest.Collector):
    """The suite of one endpoint, as pytest items (detected dialect, one Context shared)."""

    def collect(self):
        from ._http import Endpoint
        from .suite import api_key_from_env, cases_of, detect_dialect

        opt = self.config.getoption
        key_env = opt("--endpoint-api-key-env")
        endpoint = Endpoint(
            opt("--endpoint"),
            api_key=api_key_from_env(key_env),
            api_key_env=key_env,
            timeout_s=opt("--endpoint-timeout-s"),
        )
        self.config.add_cleanup(endpoint.close)
        dialect = opt("--endpoint-dialect") or detect_dialect(endpoint)
        ctx = Context(endpoint, dialect, model=opt("--endpoint-model"))
        only = set(opt("--endpoint-only") or ())
        shared = {"context": ctx}
        for case in cases_of(dialect):
            if only and case.name not in only and case.group not in only:
                continue
            yield _CaseItem.from_parent(
                self, name=f"{dialect}::{case.name}", case=case, shared=shared
            )


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    if not config.getoption("--endpoint"):
        return
    collector = _EndpointCollector.from_parent(session, name=ITEM_PREFIX, nodeid=ITEM_PREFIX)
    items.extend(collector.collect())


@pytest.fixture(scope="session")
def endpoint_url(request: pytest.FixtureRequest) -> str:
    """The URL given with --endpoint (the test is skipped without one)."""
    url = request.config.getoption("--endpoint")
    if not url:
        pytest.skip("no --endpoint URL given")
    return url


@pytest.fixture(scope="session")
def endpoint_report(request: pytest.FixtureRequest, endpoint_url: str):
    """The whole suite run once against --endpoint: a deploykit CheckReport."""
    opt = request.config.getoption
    return check_endpoint(
        endpoint_url,
        dialect=opt("--endpoint-dialect"),
        model=opt("--endpoint-model"),
        api_key_env=opt("--endpoint-api-key-env"),
        only=opt("--endpoint-only"),
        timeout_s=opt("--endpoint-timeout-s"),
    )
