"""`deploykit serve`: the reference server (or the one-at-a-time baseline) from the command line."""

from __future__ import annotations

import logging

from .. import _env
from ..argtypes import non_negative_int, port, positive_float, positive_int
from ..models.decode_step import DECODE_STEPS
from ..models.kernels import KERNELS
from .app import ServerConfig, serve, serve_naive
from .engine import EngineConfig
from .tgi import TGILimits


def add_cli(sub) -> None:
    """Add `deploykit serve` to the CLI."""
    d = ServerConfig()
    e = d.engine
    cmd = sub.add_parser("serve", help="serve a model with an OpenAI-compatible API")
    cmd.add_argument("--model", default=d.model, help="built-in name, local folder or hub id")
    cmd.add_argument(
        "--served-model-name", default=None, help="name clients send as 'model' (default: --model)"
    )
    cmd.add_argument("--host", default=d.host, help="address to bind (default: loopback only)")
    cmd.add_argument("--port", type=port, default=d.port)
    cmd.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: $DEPLOYKIT_API_KEY)",
    )
    cmd.add_argument("--device", default=d.device)
    cmd.add_argument("--dtype", default=d.dtype)
    cmd.add_argument(
        "--kernels",
        choices=KERNELS,
        default=e.kernels,
        help="linear layers: onednn (weights prepacked once, CPU), int8 (weight-only, one "
        "scale per row, CPU), int4 (weight-only, groups of 32 with scale and zero, CPU), w8a8 "
        "(int8 weights and activations, each input row scaled as it comes, CPU with VNNI), eager "
        "(PyTorch's), auto (onednn where it applies)",
    )
    cmd.add_argument(
        "--decode-step",
        choices=DECODE_STEPS,
        default=e.decode_step,
        help="who runs a decode step: deploykit (its own, Llama models), compiled (deploykit's "
        "through torch.compile, with --kernels eager, int4, w8a8 or auto; compiles for minutes at "
        "start), transformers (the model's forward), auto (deploykit's where it applies, unless "
        "--kernels eager)",
    )
    cmd.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=e.max_batch_size,
        help="sequences decoded together",
    )
    cmd.add_argument(
        "--prefill-chunk-tokens",
        type=non_negative_int,
        default=e.prefill_chunk_tokens,
        help="prefill a longer prompt this many tokens per step, the running requests decoding "
        "between chunks, so it does not stall their tokens (0: every prompt in one forward)",
    )
    cmd.add_argument(
        "--max-waiting",
        type=int,
        default=e.max_waiting,
        help="queued requests beyond the batch; more get 503 + Retry-After",
    )
    cmd.add_argument(
        "--max-concurrent-requests",
        type=positive_int,
        default=None,
        help="TGI's name for the admission limit: batch plus queue; sets --max-waiting to it "
        "minus --max-batch-size (more get 503, 429 on the TGI routes)",
    )
    cmd.add_argument(
        "--max-input-tokens",
        type=positive_int,
        default=None,
        help="TGI routes: the longest prompt, in tokens (default: --max-total-tokens - 1)",
    )
    cmd.add_argument(
        "--max-total-tokens",
        type=positive_int,
        default=None,
        help="TGI routes: prompt plus generated tokens per request (default: the model's context)",
    )
    cmd.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes)
    cmd.add_argument(
        "--drain-timeout-s",
        type=positive_float,
        default=d.drain_timeout_s,
        help="on SIGTERM, how long in-flight requests may take to finish",
    )
    cmd.add_argument(
        "--naive",
        action="store_true",
        help="serve one request at a time with model.generate (the baseline)",
    )
    cmd.add_argument(
        "--block-event-loop",
        action="store_true",
        help="with --naive: call generate on the event loop, as the seed did",
    )
    cmd.set_defaults(func=cli_serve)


def cli_serve(args) -> int:
    """Run `deploykit serve` with parsed arguments."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    batch, waiting = args.max_batch_size, args.max_waiting
    if args.max_concurrent_requests is not None:  # TGI's admission limit: batch + queue
        batch = min(batch, args.max_concurrent_requests)
        waiting = args.max_concurrent_requests - batch
    config = ServerConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        api_key=args.api_key or _env.api_key(),
        device=args.device,
        dtype=args.dtype,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout_s,
        engine=EngineConfig(
            max_batch_size=batch,
            max_waiting=waiting,
            kernels=args.kernels,
            decode_step=args.decode_step,
            prefill_chunk_tokens=args.prefill_chunk_tokens,
        ),
        tgi_limits=TGILimits(args.max_input_tokens, args.max_total_tokens),
    )
    if args.naive:
        serve_naive(config, block_event_loop=args.block_event_loop)
    else:
        serve(config)
    return 0
