"""deploykit: the library behind the LLM deployment cookbook."""

from .errors import (DeployKitError, MissingExtraError, NotebookNotFoundError, RecipeKeyError,
                     ServerStartError, UnknownModelError, UnknownRecipeError)
from .cookbook import NotebookResult, Recipe, load_recipe, run as run_cookbook
from .launch import Server, free_port, stop_all
from .launch import launch as launch_server
from .generate import Generation, generate, measure_throughput, memory_footprint, stream
from .server.process import start_server
from .models import TOY_MODELS, LoadedModel, build_report, load_model, model_path, toy_path
from .plan import (GPU, GPUS, MemoryPlan, ModelConfig, cache_bytes, model_config, plan as memory_plan,
                   plans as memory_plans, smallest_fit, table as plan_table)
from .prometheus import Metrics, MetricsTrace, parse_metrics, scrape as scrape_metrics, watch as watch_metrics
from .vllm import OfflineResult, VLLMArgs, offline_generate, start_vllm
from .vllm_env import VLLMEnv, ensure_env as ensure_vllm_env, find_env as find_vllm_env

__version__ = "0.1.0"

__all__ = [
    "Server", "free_port", "launch_server", "stop_all", "start_server",
    "Generation", "generate", "measure_throughput", "memory_footprint", "stream",
    "NotebookResult", "Recipe", "load_recipe", "run_cookbook",
    "TOY_MODELS", "LoadedModel", "build_report", "load_model", "model_path", "toy_path",
    "DeployKitError", "MissingExtraError", "NotebookNotFoundError", "RecipeKeyError",
    "ServerStartError", "UnknownModelError", "UnknownRecipeError",
    "GPU", "GPUS", "MemoryPlan", "ModelConfig", "cache_bytes", "model_config", "memory_plan",
    "memory_plans", "smallest_fit", "plan_table",
    "Metrics", "MetricsTrace", "parse_metrics", "scrape_metrics", "watch_metrics",
    "OfflineResult", "VLLMArgs", "offline_generate", "start_vllm",
    "VLLMEnv", "ensure_vllm_env", "find_vllm_env",
]
