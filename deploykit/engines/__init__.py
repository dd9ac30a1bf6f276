"""Inference engines run as server processes (vLLM, llama.cpp), one module each.

What they share lives in `base`: typed arguments -> command -> `launch_server` -> stop.
"""

from .base import EngineArgs, start_engine
from .llamacpp import LlamaCppArgs, start_llamacpp
from .ollama import create_command, modelfile, ollama_available, write_modelfile
from .tgi import TGIArgs, openai_equivalent, start_tgi, tgi_runnable
from .vllm import (OfflineResult, PrefixCacheResult, VLLMArgs, measure_prefix_cache, median_ttft_s,
                   offline_generate, start_vllm)
from .vllm_env import VLLMEnv, ensure_vllm_env, find_vllm_env

__all__ = ["EngineArgs", "start_engine", "LlamaCppArgs", "start_llamacpp", "OfflineResult",
           "PrefixCacheResult", "VLLMArgs", "measure_prefix_cache", "median_ttft_s",
           "offline_generate", "start_vllm", "VLLMEnv", "ensure_vllm_env", "find_vllm_env",
           "create_command", "modelfile", "ollama_available", "write_modelfile", "TGIArgs",
           "openai_equivalent", "start_tgi", "tgi_runnable"]
