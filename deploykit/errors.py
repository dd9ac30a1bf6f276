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


class UnknownGPUError(DeployKitError, ValueError):
    """A GPU name is not in the memory planner's catalog."""


class EngineArgumentError(DeployKitError, ValueError):
    """An inference-engine argument is invalid; caught before any process starts."""


class VLLMEnvError(DeployKitError, RuntimeError):
    """The separate vLLM virtualenv is missing, broken, or could not be created."""


class InvalidRequestError(DeployKitError, ValueError):
    """A generation request is malformed or asks for something the model cannot do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineOverloadedError(DeployKitError, RuntimeError):
    """The engine's waiting queue is full; retry after a short wait."""


class EngineStoppedError(DeployKitError, RuntimeError):
    """The engine is draining or stopped and takes no new requests."""


class EngineStepError(DeployKitError, RuntimeError):
    """A model step failed; the requests in that batch were ended with this error."""


class EngineRunError(DeployKitError, RuntimeError):
    """An inference-engine subprocess failed; the message carries its log tail."""


class MetricNotFoundError(DeployKitError, KeyError):
    """A Prometheus metric is not in a server's /metrics scrape."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelBuildError(DeployKitError, RuntimeError):
    """A built-in model could not be fetched or built; the message says what to install or set."""


class InvalidArgumentError(DeployKitError, ValueError):
    """An argument is out of range or not one of its choices; the message lists the valid ones."""


class MissingCredentialError(DeployKitError, RuntimeError):
    """A credential's environment variable is unset or empty; the message names it and how to set it."""


class NginxConfigError(DeployKitError, ValueError):
    """`nginx -t` rejected a configuration; the message carries nginx's own report."""


class PrometheusError(DeployKitError, ValueError):
    """Prometheus or promtool refused a config, rule file, rule test or query; the message has its report."""


class EndpointUnreachableError(DeployKitError, ConnectionError):
    """Nothing answers at an endpoint's URL; the message says what to check."""


class RetryBudgetExhaustedError(DeployKitError, RuntimeError):
    """Every attempt a retry policy allowed failed; the message has the count and the last cause."""

    def __init__(self, message: str, attempts: int = 0, last_error: str = "",
                 status: int | None = None) -> None:
        super().__init__(message)
        self.attempts, self.last_error, self.status = attempts, last_error, status


class StreamInterruptedError(DeployKitError, RuntimeError):
    """A stream broke after text had arrived; it is not restarted, which would repeat that text."""

    def __init__(self, message: str, chunks: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.chunks, self.text = chunks, text  # content chunks received, and their text


class RequestRejectedError(DeployKitError, RuntimeError):
    """A server refused a request with a status that retrying cannot change (400, 401, 404, 422...)."""

    def __init__(self, message: str, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status, self.body = status, body
