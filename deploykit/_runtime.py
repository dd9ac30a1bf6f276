"""What library calls share at run time: an event loop from sync code, torch's thread count."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


def run_sync(coro):
    """Run coro to completion, in a thread of its own when this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: list = []

    def target() -> None:
        try:
            box.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    # a running loop (Jupyter's) cannot be re-entered
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op threads for the block (None: leave them); yield the count."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
