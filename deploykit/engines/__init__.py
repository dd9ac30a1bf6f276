"""Inference engines run as server processes (vLLM now; llama.cpp next), one module each.

What they share lives in `base`: typed arguments -> command -> `launch_server` -> stop.
"""

from .base import EngineArgs, start_engine
from .vllm import (OfflineResult, PrefixCacheResult, VLLMArgs, measure_prefix_cache, median_ttft_s,
                   offline_generate, start_vllm)
from .vllm_env import VLLMEnv, ensure_vllm_env, find_vllm_env

__all__ = ["EngineArgs", "start_engine", "OfflineResult", "PrefixCacheResult", "VLLMArgs",
           "measure_prefix_cache", "median_ttft_s", "offline_generate", "start_vllm", "VLLMEnv",
           "ensure_vllm_env", "find_vllm_env"]
