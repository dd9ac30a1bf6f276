"""Every error deploykit raises on purpose; each message says what to do next."""

from __future__ import annotations


class DeployKitError(Exception):
    """Base class of deploykit's own errors."""


class UnknownModelError(DeployKitError, ValueError):
    """A model name is neither a built-in toy, a local folder, nor a usable hub id."""


class UnknownRecipeError(DeployKitError, ValueError):
    """A recipe name has no file under recipes/."""


class RecipeKeyError(DeployKitError, KeyError):
    """A recipe or -p key is not a parameter of the notebooks it is meant for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotebookNotFoundError(DeployKitError, ValueError):
    """A notebook named on the command line is not in notebooks/."""


class MissingExtraError(DeployKitError, ImportError):
    """An optional dependency is not installed."""


class ServerStartError(DeployKitError, RuntimeError):
    """A server process died or never became healthy; the message carries its log tail."""
