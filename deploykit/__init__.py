"""deploykit: the library behind the LLM deployment cookbook."""

from .errors import (DeployKitError, MissingExtraError, NotebookNotFoundError, RecipeKeyError,
                     ServerStartError, UnknownModelError, UnknownRecipeError)
from .models import TOY_MODELS, LoadedModel, build_report, load_model, model_path, toy_path

__version__ = "0.1.0"

__all__ = [
    "TOY_MODELS", "LoadedModel", "build_report", "load_model", "model_path", "toy_path",
    "DeployKitError", "MissingExtraError", "NotebookNotFoundError", "RecipeKeyError",
    "ServerStartError", "UnknownModelError", "UnknownRecipeError",
]
