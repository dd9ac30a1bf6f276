"""Checking deployed endpoints: `check` tests one against its API's reference, `doctor` says
what is wrong and the fix.

`suite` runs the cases (`openai`, `tgi`, `ollama` describe each dialect; `common` holds
what they share) and makes the report; `compat` sets several reports side by side and
`engines` produces them from the servers deploykit can start; `doctor` finds causes with
`_connection`, `_memory` and `_symptoms`, and reports them as `diagnosis` says;
`casebook` and `plots` are what the troubleshooting recipe shows; `pytest_plugin` runs the
suite inside a team's own pytest (`pytest --endpoint URL`).
"""

from .casebook import Casebook
from .compat import compatibility_table
from .diagnosis import Diagnosis, DoctorReport
from .doctor import doctor
from .engines import served_name, start_transformers_serve
from .plots import plot_stream_arrivals
from .suite import CheckReport, CheckResult, check_endpoint

__all__ = [
    "Casebook",
    "compatibility_table",
    "Diagnosis",
    "DoctorReport",
    "doctor",
    "plot_stream_arrivals",
    "served_name",
    "start_transformers_serve",
    "CheckReport",
    "CheckResult",
    "check_endpoint",
]
