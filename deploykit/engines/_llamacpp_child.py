"""Run llama.cpp's own HTTP server (the xllamacpp wheel) on one GGUF until SIGTERM or SIGINT.

`engines.llamacpp.start_llamacpp` starts this as a server process; llama.cpp logs to
stderr. The flags are named after llama-server's, but only those `LlamaCppArgs` sets exist:
this is not llama-server's CLI. It uses nothing of deploykit (`python -m` imports the
light package only), so the model load is all of its start-up time.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

_GRACE_S = 3  # after SIGTERM: seconds llama.cpp gets to stop before the process is ended


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(
        prog="python -m deploykit.engines._llamacpp_child",
        description="Serve one GGUF with llama.cpp (xllamacpp).",
    )
    p.add_argument("--model", "-m", required=True, help="path of the .gguf file")
    p.add_argument("--alias", default=None, help="model name the server reports")
    p.add_argument(
        "--ctx-size", "-c", type=int, default=2048, help="KV-cache tokens, shared by the slots"
    )
    p.add_argument("--parallel", "-np", type=int, default=4, help="slots: concurrent sequences")
    p.add_argument(
        "--threads", "-t", type=int, default=None, help="CPU threads (default: llama.cpp's)"
    )
    p.add_argument(
        "--n-gpu-layers",
        "-ngl",
        type=int,
        default=None,
        help="layers offloaded to the GPU (default: llama.cpp's)",
    )
    p.add_argument("--batch-size", "-b", type=int, default=None, help="logical batch (n_batch)")
    p.add_argument("--ubatch-size", "-ub", type=int, default=None, help="physical batch (n_ubatch)")
    p.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    p.add_argument(
        "--chat-template", default=None, help="chat template (Jinja) instead of the GGUF's own"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    return p.parse_args(argv)


def build_params(xllamacpp, ns: argparse.Namespace):
    """Return the xllamacpp.CommonParams for the parsed command line."""
    params = xllamacpp.CommonParams()
    params.model.path = ns.model
    if ns.alias:
        params.model_alias = {ns.alias}
    params.n_ctx = ns.ctx_size
    params.n_parallel = ns.parallel
    if ns.threads is not None:
        # llama-server's -t sets generation threads; prompt batches use the same count
        params.cpuparams.n_threads = ns.threads
        params.cpuparams_batch.n_threads = ns.threads
    if ns.n_gpu_layers is not None:
        params.n_gpu_layers = ns.n_gpu_layers
    if ns.batch_size is not None:
        params.n_batch = ns.batch_size
    if ns.ubatch_size is not None:
        params.n_ubatch = ns.ubatch_size
    params.endpoint_metrics = ns.metrics
    if ns.chat_template is not None:
        params.chat_template = ns.chat_template
        # a name ("chatml", "llama2") picks llama.cpp's built-in format, as llama-server's
        # --chat-template does without --jinja; Jinja text is rendered as such
        params.use_jinja = "{" in ns.chat_template
    params.hostnames = [ns.host]
    params.port = ns.port
    return params


def _log(message: str) -> None:
    print(f"[deploykit llama.cpp] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    ns = parse_args(argv)
    try:
        import xllamacpp
    except ImportError as exc:
        _log(
            f"cannot import xllamacpp ({exc}); install it with `pip install xllamacpp` "
            f"into the environment of {sys.executable}."
        )
        return 2
    # While the model loads (a blocking C++ call) Python signal handlers would not run, so
    # SIGTERM and SIGINT keep their default action then: the process ends at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _log(f"xllamacpp {getattr(xllamacpp, '__version__', '?')}: loading {ns.model}")
    try:
        server = xllamacpp.Server(build_params(xllamacpp, ns))
    except RuntimeError as exc:  # llama.cpp logged the cause above (bad file, port taken, ...)
        _log(f"llama.cpp did not start: {exc} The lines above say why.")
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _log(f"serving {ns.alias or ns.model} at {server.listening_address}")
    stop.wait()
    _log(f"stopping (requests still running are cut off after {_GRACE_S} s)")
    # ~Server waits for llama.cpp's loop, up to 30 s while a request is generating, and
    # holds the GIL meanwhile, so no Python timer could fire: SIGALRM's default action
    # ends the process from the kernel instead.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_GRACE_S)
    del server
    _log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
