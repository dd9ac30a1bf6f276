"""Checking deployed endpoints: `check` tests one against its API's reference.

`suite` runs the cases (`openai`, `tgi`, `ollama` describe each dialect; `common` holds
what they share) and makes the report; `compat` sets several reports side by side and
`engines` produces them from the servers deploykit can start; `pytest_plugin` runs the
suite inside a team's own pytest (`pytest --endpoint URL`).
"""

from .compat import compatibility_table
from .engines import served_name, start_transformers_serve
from .suite import CheckReport, CheckResult, check_endpoint

__all__ = [
    "compatibility_table",
    "served_name",
    "start_transformers_serve",
    "CheckReport",
    "CheckResult",
    "check_endpoint",
]
