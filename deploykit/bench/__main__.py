"""`python -m deploykit.bench servers|vllm ...`: the same as `deploykit bench ...`."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
