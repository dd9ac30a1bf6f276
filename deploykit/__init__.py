"""deploykit: the library behind the LLM deployment cookbook."""

from .errors import (DeployKitError, MissingExtraError, NotebookNotFoundError, RecipeKeyError,
                     ServerStartError, UnknownModelError, UnknownRecipeError)
from .cookbook import NotebookResult, Recipe, load_recipe, run as run_cookbook
from .generate import Generation, generate, measure_throughput, memory_footprint, stream
from .models import TOY_MODELS, LoadedModel, build_report, load_model, model_path, toy_path

__version__ = "0.1.0"

__all__ = [
    "Generation", "generate", "measure_throughput", "memory_footprint", "stream",
    "NotebookResult", "Recipe", "load_recipe", "run_cookbook",
    "TOY_MODELS", "LoadedModel", "build_report", "load_model", "model_path", "toy_path",
    "DeployKitError", "MissingExtraError", "NotebookNotFoundError", "RecipeKeyError",
    "ServerStartError", "UnknownModelError", "UnknownRecipeError",
]
