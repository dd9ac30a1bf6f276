"""The memory planner: what a model needs on a GPU (weights, KV cache, activations), and its plots."""

from .memory import (
    GPUS,
    MemoryPlan,
    ModelConfig,
    attendees_that_fit,
    cache_bytes,
    memory_plan,
    memory_plans,
    model_config,
    plan_table,
    smallest_fit,
)
from .plots import plot_kv_growth, plot_plan_knobs

__all__ = [
    "GPUS",
    "MemoryPlan",
    "ModelConfig",
    "attendees_that_fit",
    "cache_bytes",
    "memory_plan",
    "memory_plans",
    "model_config",
    "plan_table",
    "smallest_fit",
    "plot_kv_growth",
    "plot_plan_knobs",
]
