"""Load balancing over replicas: deploykit's router (least outstanding requests, health
checks, a circuit breaker and failover, run as a process of its own) and nginx."""

from .nginx import check_nginx_config, nginx_config, start_nginx, write_nginx_config
from .process import router_stats, start_replicas, start_router
from .proxy import REPLICA_HEADER, RouterConfig

__all__ = [
    "check_nginx_config",
    "nginx_config",
    "start_nginx",
    "write_nginx_config",
    "router_stats",
    "start_replicas",
    "start_router",
    "REPLICA_HEADER",
    "RouterConfig",
]
