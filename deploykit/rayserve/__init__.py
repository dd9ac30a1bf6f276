"""Ray Serve on a Ray cluster: deploykit's engine as a Serve deployment, on one machine or many.

`cluster` starts a local cluster of a head and worker nodes with `ray start` (or connects
to a real one), reports its nodes and kills one for a drill; `serve` holds the typed
config of one LLM application, deploys it through the head's HTTP API and watches its
replicas; `netns` keeps a local cluster off every network; `app` is what Ray's processes
import (it needs Ray, so nothing here imports it).
"""

from ._dashboard import RayNode
from .cluster import (
    LocalRayCluster,
    NodeKill,
    RayCluster,
    connect_ray_cluster,
    ray_processes,
    ray_start_commands,
    start_ray_cluster,
)
from .serve import RayServeConfig, Replica, ReplicaWatch, ServeApp, ServeAutoscaling

__all__ = [
    "RayNode",
    "LocalRayCluster",
    "NodeKill",
    "RayCluster",
    "connect_ray_cluster",
    "ray_processes",
    "ray_start_commands",
    "start_ray_cluster",
    "RayServeConfig",
    "Replica",
    "ReplicaWatch",
    "ServeApp",
    "ServeAutoscaling",
]
