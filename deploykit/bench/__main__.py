"""`python -m deploykit.bench servers|vllm|llamacpp ...`: the same as `deploykit bench ...`."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
