"""Scripts that run inside the vLLM virtualenv, started by path with that env's python.

They live in their own folder because a script's folder goes first on sys.path, and
deploykit/engines/ holds a module named vllm.py that would shadow the real vllm package.
Standard library and vllm only: deploykit is not installed in the vLLM environment.
"""
