"""Clients of inference servers: the official ones, set up for the cookbook's servers."""

from .hub import tgi_client

__all__ = ["tgi_client"]
