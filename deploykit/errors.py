"""Every error deploykit raises on purpose, in three families; each message says what to do next.

Catch a family to handle a kind of failure, or `DeployKitError` for all of them::

    DeployKitError
    ├── ConfigurationError         something given to deploykit is wrong: fix it, then retry
    │   ├── InvalidArgumentError       an argument is out of range or not one of its choices
    │   ├── EngineArgumentError        an engine's arguments (VLLMArgs, TGIArgs, ...)
    │   ├── UnknownModelError          not a built-in name, a model folder or a hub id
    │   ├── UnknownGPUError            not in the memory planner's catalog
    │   ├── UnknownRecipeError         no such file under recipes/
    │   ├── RecipeKeyError             a recipe or -p key the notebook does not take
    │   ├── NotebookNotFoundError      no such notebook, or no cookbook checkout
    │   ├── MissingExtraError          an optional package is not installed
    │   ├── MissingCredentialError     a credential's environment variable is unset
    │   ├── NginxConfigError           `nginx -t` rejected a configuration
    │   └── PrometheusError            Prometheus or promtool refused a config, rule or query
    ├── EngineError                a process or engine deploykit runs failed or is unavailable
    │   ├── ServerStartError           a server died or never became healthy (log tail inside)
    │   ├── EngineRunError             an engine's job failed (log tail inside)
    │   ├── VLLMEnvError               the vLLM virtualenv is missing or broken
    │   ├── ModelBuildError            a built-in model could not be fetched or built
    │   ├── EngineStepError            a model step failed; its batch ended with this error
    │   ├── EngineOverloadedError      the waiting queue is full (a server answers 503)
    │   ├── EngineStoppedError         draining or stopped (a server answers 503)
    │   └── DockerError                no Docker engine, or a build, container or Compose failed
    └── RequestError               a request to a server failed, or its answer is unusable
        ├── InvalidRequestError        the request is malformed or asks the impossible (400)
        ├── EndpointUnreachableError   nothing answers at the URL
        ├── RequestRejectedError       a status retrying cannot change (400, 401, 404, 422...)
        ├── RetryBudgetExhaustedError  every attempt a retry policy allowed failed
        ├── StreamInterruptedError     a stream broke after text had arrived
        └── MetricNotFoundError        a metric is not in a server's /metrics

Each also derives from the built-in exception it refines (ValueError, KeyError, ImportError,
ConnectionError or RuntimeError), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = [
    "DeployKitError",
    "ConfigurationError",
    "EngineError",
    "RequestError",
    "UnknownModelError",
    "UnknownRecipeError",
    "RecipeKeyError",
    "NotebookNotFoundError",
    "MissingExtraError",
    "ServerStartError",
    "UnknownGPUError",
    "EngineArgumentError",
    "VLLMEnvError",
    "InvalidRequestError",
    "EngineOverloadedError",
    "EngineStoppedError",
    "EngineStepError",
    "EngineRunError",
    "MetricNotFoundError",
    "ModelBuildError",
    "InvalidArgumentError",
    "MissingCredentialError",
    "NginxConfigError",
    "PrometheusError",
    "DockerError",
    "EndpointUnreachableError",
    "RetryBudgetExhaustedError",
    "StreamInterruptedError",
    "RequestRejectedError",
]


class DeployKitError(Exception):
    """Base class of deploykit's own errors."""


class ConfigurationError(DeployKitError):
    """Something given to deploykit (an argument, a name, a file, the environment) is wrong."""


class EngineError(DeployKitError):
    """A process or engine deploykit runs failed, or is not taking work."""


class RequestError(DeployKitError):
    """A request to a server failed, or its answer is not what was asked for."""


class UnknownModelError(ConfigurationError, ValueError):
    """A model name is neither a built-in toy, a local folder, nor a usable hub id."""


class UnknownRecipeError(ConfigurationError, ValueError):
    """A recipe name has no file under recipes/."""


class RecipeKeyError(ConfigurationError, KeyError):
    """A recipe or -p key is not a parameter of the notebooks it is meant for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotebookNotFoundError(ConfigurationError, ValueError):
    """A notebook named on the command line is not in notebooks/."""


class MissingExtraError(ConfigurationError, ImportError):
    """An optional dependency is not installed."""


class ServerStartError(EngineError, RuntimeError):
    """A server process died or never became healthy; the message carries its log tail."""


class UnknownGPUError(ConfigurationError, ValueError):
    """A GPU name is not in the memory planner's catalog."""


class EngineArgumentError(ConfigurationError, ValueError):
    """An inference-engine argument is invalid; caught before any process starts."""


class VLLMEnvError(EngineError, RuntimeError):
    """The separate vLLM virtualenv is missing, broken, or could not be created."""


class InvalidRequestError(RequestError, ValueError):
    """A generation request is malformed or asks for something the model cannot do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineOverloadedError(EngineError, RuntimeError):
    """The engine's waiting queue is full; retry after a short wait."""


class EngineStoppedError(EngineError, RuntimeError):
    """The engine is draining or stopped and takes no new requests."""


class EngineStepError(EngineError, RuntimeError):
    """A model step failed; the requests in that batch were ended with this error."""


class EngineRunError(EngineError, RuntimeError):
    """An inference-engine subprocess failed; the message carries its log tail."""


class DockerError(EngineError, RuntimeError):
    """No Docker engine could be used, or a build, container or Compose command failed; the
    message carries the command's output and what to do."""


class MetricNotFoundError(RequestError, KeyError):
    """A Prometheus metric is not in a server's /metrics scrape."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelBuildError(EngineError, RuntimeError):
    """A built-in model could not be fetched or built; the message says what to install or set."""


class InvalidArgumentError(ConfigurationError, ValueError):
    """An argument is out of range or not one of its choices; the message lists the valid ones."""


class MissingCredentialError(ConfigurationError, RuntimeError):
    """A credential's environment variable is unset or empty; the message names it and how to set it."""


class NginxConfigError(ConfigurationError, ValueError):
    """`nginx -t` rejected a configuration; the message carries nginx's own report."""


class PrometheusError(ConfigurationError, ValueError):
    """Prometheus or promtool refused a config, rule file, rule test or query; the message has its report."""


class EndpointUnreachableError(RequestError, ConnectionError):
    """Nothing answers at an endpoint's URL; the message says what to check."""


class RetryBudgetExhaustedError(RequestError, RuntimeError):
    """Every attempt a retry policy allowed failed; the message has the count and the last cause."""

    def __init__(
        self, message: str, attempts: int = 0, last_error: str = "", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.attempts, self.last_error, self.status = attempts, last_error, status


class StreamInterruptedError(RequestError, RuntimeError):
    """A stream broke after text had arrived; it is not restarted, which would repeat that text."""

    def __init__(self, message: str, chunks: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.chunks, self.text = chunks, text  # content chunks received, and their text


class RequestRejectedError(RequestError, RuntimeError):
    """A server refused a request with a status that retrying cannot change (400, 401, 404, 422...)."""

    def __init__(self, message: str, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status, self.body = status, body
