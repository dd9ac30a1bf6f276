"""One request's record, as the load generator writes it and vLLM's metrics read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestResult:
    """One request: whether it succeeded, when its tokens came, how many there were."""

    status: int  # HTTP status; 0 when the connection failed or timed out
    latency_s: float  # to the last token chunk (streamed) or the whole body
    time_to_first_token_s: float | None  # streamed requests only
    output_tokens: int
    error: str | None = None
    itl_s: tuple[float, ...] = ()  # streamed: gaps between token chunks
    input_tokens: int | None = None  # prompt tokens: the server's usage, else the expected count
    start_s: float = 0.0  # when it was sent, seconds after the measured run started

    @property
    def ok(self) -> bool:
        """Return True for a 200 without an error event."""
        return self.status == 200 and self.error is None
