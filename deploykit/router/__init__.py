"""deploykit's router: least-outstanding-requests balancing over replicas, with health checks,
a circuit breaker and failover, run as a process of its own."""

from .balancer import Balancer, Replica
from .drill import (DrillRequest, DrillResult, drill_table, failover_drill, plot_drills,
                    served_by_replica, time_to_rejoin)
from .process import router_command, router_stats, start_replicas, start_router
from .proxy import REPLICA_HEADER, RouterConfig

__all__ = ["Balancer", "Replica", "REPLICA_HEADER", "RouterConfig", "router_command",
           "router_stats", "start_router", "DrillRequest", "DrillResult", "drill_table",
           "failover_drill", "plot_drills", "served_by_replica", "start_replicas",
           "time_to_rejoin"]
