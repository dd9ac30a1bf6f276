"""Inference engines run as server processes (vLLM, llama.cpp, TGI), one module each, and
Ollama's Modelfile.

What they share lives in `base`: typed arguments -> command -> `launch_server` -> stop.
"""

from .base import EngineArgs
from .llamacpp import LlamaCppArgs, start_llamacpp
from .ollama import create_command, ollama_available, write_modelfile
from .tgi import TGIArgs, openai_equivalent, start_tgi, tgi_runnable
from .vllm import VLLMArgs, offline_generate, start_vllm
from .vllm_env import ensure_vllm_env, find_vllm_env

__all__ = [
    "EngineArgs",
    "LlamaCppArgs",
    "start_llamacpp",
    "create_command",
    "ollama_available",
    "write_modelfile",
    "TGIArgs",
    "openai_equivalent",
    "start_tgi",
    "tgi_runnable",
    "VLLMArgs",
    "offline_generate",
    "start_vllm",
    "ensure_vllm_env",
    "find_vllm_env",
]
