"""The six deployment platforms the cookbook covers, as data: what you run, how you pay, which API.

Words, not invented numbers: latency and scale depend on the model, the hardware and the load,
which the notebooks measure. Prices live in `hosted.costs`, with their sources and dates.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

from ..errors import InvalidArgumentError

KINDS = ("self-hosted", "hosted")
DIALECTS = ("openai", "tgi", "ollama", "bedrock-converse", "replicate-predictions")


@dataclass(frozen=True)
class Platform:
    """One way to serve an LLM, described in the same columns as the others."""

    name: str
    kind: str  # "self-hosted": you run the server; "hosted": someone else does
    dialect: str  # the API its clients speak natively (see DIALECTS)
    cost_model: str
    scale: str
    latency: str  # typical behaviour in words; the notebooks measure the numbers
    best_for: str
    setup: str  # what it takes to get a first answer
    notebook: str  # the cookbook notebook that covers it, without .ipynb
    status: str = "active"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgumentError(
                f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}."
            )
        if self.dialect not in DIALECTS:
            raise InvalidArgumentError(
                f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}."
            )
        if not re.fullmatch(r"\d\d_[a-z0-9_]+", self.notebook):
            raise InvalidArgumentError(
                f"notebook must be a name like '03_vllm_server', got {self.notebook!r}."
            )


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        name="vLLM",
        kind="self-hosted",
        dialect="openai",
        cost_model="your GPU by the hour, busy or idle",
        scale="continuous batching keeps one GPU busy with many requests; more replicas or "
        "tensor parallelism for more",
        latency="low when warm; time to first token grows with queue depth and prompt length",
        best_for="production serving of open-weight models at high throughput",
        setup="pip install vllm on a CUDA machine, one model per server process",
        notebook="03_vllm_server",
    ),
    Platform(
        name="TGI",
        kind="self-hosted",
        dialect="tgi",
        cost_model="your GPU by the hour, busy or idle",
        scale="continuous batching on one or more GPUs; replicas behind a load balancer",
        latency="low when warm, in the same range as vLLM on the same GPU",
        best_for="existing Hugging Face deployments; new projects are pointed to vLLM or SGLang",
        setup="the Docker image with --gpus; it also serves an OpenAI-style /v1/chat/completions",
        notebook="04_tgi",
        status="maintenance mode since December 2025 (its README), which points to vLLM, "
        "SGLang and llama.cpp/MLX instead",
    ),
    Platform(
        name="Ollama",
        kind="self-hosted",
        dialect="ollama",
        cost_model="free software on a machine you already own",
        scale="one machine and a handful of concurrent users",
        latency="set by your hardware; quantized GGUF models keep a laptop usable",
        best_for="local development, offline work and private experiments",
        setup="one installer, then `ollama run <model>`; an OpenAI-style /v1 is built in",
        notebook="05_ollama",
    ),
    Platform(
        name="OpenAI",
        kind="hosted",
        dialect="openai",
        cost_model="per token, input and output priced separately",
        scale="run by the provider; your ceiling is your account's rate limits",
        latency="low for the small models, plus the network round trip",
        best_for="the quickest start and closed frontier models",
        setup="an API key in OPENAI_API_KEY",
        notebook="06_cloud_endpoints",
    ),
    Platform(
        name="AWS Bedrock",
        kind="hosted",
        dialect="bedrock-converse",
        cost_model="per token on demand; provisioned throughput is billed by the hour",
        scale="run by AWS within per-account, per-region quotas",
        latency="moderate: the region and any cross-region routing add to the model's own time",
        best_for="teams already on AWS who want IAM, private networking and one bill",
        setup="AWS credentials and model access enabled in the console for the region",
        notebook="06_cloud_endpoints",
    ),
    Platform(
        name="Replicate",
        kind="hosted",
        dialect="replicate-predictions",
        cost_model="per second of hardware; some official language models per token",
        scale="scales to zero and back up on demand",
        latency="quick on popular warm models; cold boots add seconds to minutes on idle ones",
        best_for="prototypes and trying many open models without owning a GPU",
        setup="an API token in REPLICATE_API_TOKEN",
        notebook="06_cloud_endpoints",
    ),
)


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise InvalidArgumentError(
            f"{name} must be None or one of {', '.join(choices)}, got {value!r}."
        )


def platform_table(
    kind: str | None = None, dialect: str | None = None, platforms: tuple[Platform, ...] = PLATFORMS
):
    """Return the platforms as a DataFrame, one row each, filtered by kind and dialect if given."""
    import pandas as pd

    _choice("kind", kind, KINDS)
    _choice("dialect", dialect, DIALECTS)
    rows = [
        {f.name: getattr(p, f.name) for f in fields(Platform)}
        for p in platforms
        if kind in (None, p.kind) and dialect in (None, p.dialect)
    ]
    return pd.DataFrame(rows, columns=[f.name for f in fields(Platform)])


def platform_browser(df=None):
    """Return an ipywidgets filter over a platform table: kind and dialect dropdowns, the rows."""
    import ipywidgets as widgets

    df = platform_table() if df is None else df
    missing = {"kind", "dialect"} - set(df.columns)
    if missing:
        raise InvalidArgumentError(
            f"df needs the columns kind and dialect (missing: "
            f"{', '.join(sorted(missing))}); pass dk.platform_table()."
        )
    everything = "(all)"
    kind_box = widgets.Dropdown(
        options=[everything, *sorted(df["kind"].unique())], value=everything, description="kind"
    )
    dialect_box = widgets.Dropdown(
        options=[everything, *sorted(df["dialect"].unique())],
        value=everything,
        description="dialect",
    )
    out = widgets.Output()

    def show(_change=None) -> None:
        rows = df
        if kind_box.value != everything:
            rows = rows[rows["kind"] == kind_box.value]
        if dialect_box.value != everything:
            rows = rows[rows["dialect"] == dialect_box.value]
        # set outputs directly: works with or without a running kernel (tests, voila, papermill)
        out.outputs = (
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {
                    "text/plain": rows.to_string(index=False),
                    "text/html": rows.to_html(index=False),
                },
            },
        )

    kind_box.observe(show, names="value")
    dialect_box.observe(show, names="value")
    show()
    return _browser_class()([widgets.HBox([kind_box, dialect_box]), out])


@functools.cache
def _browser_class():
    """Return VBox with a repr that says what the widget is (ipywidgets is imported on use)."""
    import ipywidgets as widgets

    class PlatformBrowser(widgets.VBox):
        """The browser's box; where no widget renders (a saved notebook), its text says so."""

        def __repr__(self) -> str:
            return "platform browser (a widget): open this notebook in Jupyter to filter the table"

    return PlatformBrowser
