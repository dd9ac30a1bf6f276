"""deploykit: the library behind the LLM deployment cookbook.

Notebooks import this package only (`import deploykit as dk`). Its names are the faces of
the subpackages, each listed once in its subpackage's `__all__`: what a notebook calls, and
each package's main entry points. Everything else is imported from its module
(`from deploykit.monitor.promql import requests_waiting`); moving a name between modules
inside a package never changes the face.

Layers, lowest first; a module imports only from its own layer or those below (the
import-linter contracts in pyproject.toml check it):

1. foundation: `errors`, `_env`, `_version`, `_memo`, `_runtime`, `_conditions`, `_urls`,
   `argtypes`, `tryit` (the notebooks' Try-it widget), `charts`, then `runs` (the run folder
   of started servers) and `launch` (processes);
2. `models`: the built-in models, resolving, loading, storage formats, GGUF export;
3. `generate` and `plan`: in-process generation, the memory planner;
4. `engines` and `server`: engines run as processes, deploykit's own server;
5. `client`, `monitor`, `router`, `batching`, `hosted`, `quantize`, `rayserve`: what uses
   servers (`rayserve`: Ray Serve on a Ray cluster);
6. `bench`: measures any of them;
7. `check`, `deploy`, `drills`, `cookbook`: endpoint checks and diagnoses, deployment files,
   fault drills, the notebook runner;
8. `workshop`: the workshop's JupyterLab on attendees' copies, and its preparation;
9. `cli`: the `deploykit` command.
"""

from . import batching as _batching
from . import bench as _bench
from . import charts as _charts
from . import check as _check
from . import client as _client
from . import cookbook as _cookbook
from . import deploy as _deploy
from . import drills as _drills
from . import engines as _engines
from . import errors as _errors
from . import generate as _generate
from . import hosted as _hosted
from . import launch as _launch
from . import models as _models
from . import monitor as _monitor
from . import plan as _plan
from . import quantize as _quantize
from . import rayserve as _rayserve
from . import report as _report
from . import router as _router
from . import runs as _runs
from . import server as _server
from . import tryit as _tryit
from . import workshop as _workshop
from ._version import __version__ as __version__
from .batching import *
from .bench import *
from .charts import *
from .check import *
from .client import *
from .cookbook import *
from .deploy import *
from .drills import *
from .engines import *
from .errors import *
from .generate import *
from .hosted import *
from .launch import *
from .models import *
from .monitor import *
from .plan import *
from .quantize import *
from .rayserve import *
from .report import *
from .router import *
from .runs import *
from .server import *
from .tryit import *
from .workshop import *

__all__: list[str] = []
__all__ += _errors.__all__
__all__ += _launch.__all__
__all__ += _runs.__all__
__all__ += _models.__all__
__all__ += _generate.__all__
__all__ += _plan.__all__
__all__ += _charts.__all__
__all__ += _tryit.__all__
__all__ += _report.__all__
__all__ += _engines.__all__
__all__ += _server.__all__
__all__ += _client.__all__
__all__ += _bench.__all__
__all__ += _monitor.__all__
__all__ += _router.__all__
__all__ += _rayserve.__all__
__all__ += _batching.__all__
__all__ += _hosted.__all__
__all__ += _quantize.__all__
__all__ += _drills.__all__
__all__ += _check.__all__
__all__ += _deploy.__all__
__all__ += _cookbook.__all__
__all__ += _workshop.__all__
