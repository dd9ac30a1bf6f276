"""Drills: faults injected into real servers, and what clients and balancers make of them.

`faults` is the fault-injection proxy (`deploykit faults`); `scenarios` runs the seed's
client against the resilient one through it; `failover` kills a replica behind the router
or nginx under load; `drain` sends SIGTERM to a server with requests in flight.
"""

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
    "DrainResult",
    "sigterm_drain",
    "DrillResult",
    "drill_findings",
    "drill_table",
    "failover_drill",
    "plot_drills",
    "served_by_replica",
    "time_to_rejoin",
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
