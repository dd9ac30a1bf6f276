"""Where the checkout under test is: the one place the tests compute it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
