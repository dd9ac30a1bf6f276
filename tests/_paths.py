"""Where the checkout under test is: the one place the tests compute it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the notebook tests' executed copies (one run of each notebook), which the regression and
# site tests read instead of running a notebook a second time
EXECUTED = ROOT / "build" / "test-notebooks" / "cpu"
