"""The one check of a URL a user gives: http(s), a host, and a port or a bare root where needed."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from .errors import InvalidArgumentError


def check_http_url(
    url: object, what: str, example: str, *, need_port: bool = False, root_only: bool = False
) -> SplitResult:
    """Return the parts of an http(s) URL with a host, or raise saying what `what` should be.

    need_port: the port must be written (a replica, a scrape target); root_only: no path,
    query or fragment (a server's root, as `server.url` gives it).
    """
    bad = InvalidArgumentError(f"{what} must be an http(s) URL such as {example}, got {url!r}.")
    if not isinstance(url, str):
        raise bad
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if need_port and port is None:
        raise InvalidArgumentError(f"{what} {url!r} has no port; write it: {example}.")
    if root_only and (parts.path.strip("/") or parts.query or parts.fragment):
        raise InvalidArgumentError(
            f"{what} {url!r} has a path or query; give the server's root only, e.g. {example}."
        )
    return parts
