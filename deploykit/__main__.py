"""`python -m deploykit ...`: the same as the `deploykit` command."""

import sys

from .cli import main

sys.exit(main())
