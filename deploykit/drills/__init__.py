"""Drills: faults injected into real servers, and what clients and balancers make of them.

`faults` is the fault-injection proxy (`deploykit faults`); `scenarios` runs the seed's
client against the resilient one through it; `failover` kills a replica behind the router
or nginx under load; `balanced` benchmarks a balancer over some of the replicas; `drain`
sends SIGTERM to a server with requests in flight; `ray_serve` scales a Ray Serve
application under load and kills one of its cluster's nodes.
"""

from .balanced import BalancedBench, bench_balanced
from .drain import DrainResult, sigterm_drain
from .failover import (
    DrillResult,
    drill_findings,
    drill_table,
    failover_drill,
    plot_drills,
    served_by_replica,
    time_to_rejoin,
)
from .faults import Fault, FaultProxy, start_fault_proxy
from .ray_serve import (
    FailedAttempt,
    NodeKillDrill,
    ScaleUp,
    failover_comparison,
    node_kill_drill,
    plot_ray_serve,
    scale_under_load,
    serve_findings,
    wait_scaled_down,
)
from .scenarios import (
    consume_stream,
    kill_replica,
    plot_fault_results,
    resilient_requester,
    results_table,
    retry_gaps_s,
    run_scenario,
    seed_call,
    seed_requester,
    seed_stream,
)

__all__ = [
    "BalancedBench",
    "bench_balanced",
    "DrainResult",
    "sigterm_drain",
    "DrillResult",
    "drill_findings",
    "drill_table",
    "failover_drill",
    "plot_drills",
    "served_by_replica",
    "time_to_rejoin",
    "FailedAttempt",
    "NodeKillDrill",
    "ScaleUp",
    "failover_comparison",
    "node_kill_drill",
    "plot_ray_serve",
    "scale_under_load",
    "serve_findings",
    "wait_scaled_down",
    "Fault",
    "FaultProxy",
    "start_fault_proxy",
    "consume_stream",
    "kill_replica",
    "plot_fault_results",
    "resilient_requester",
    "results_table",
    "retry_gaps_s",
    "run_scenario",
    "seed_call",
    "seed_requester",
    "seed_stream",
]
