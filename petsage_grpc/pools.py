"""Which threads run a handler on grpc's thread-pool server (`grpc.server`).

grpcio reads two attributes of a handler's function: `experimental_thread_pool` (run it on that
executor instead of the server's own) and `experimental_non_blocking` (a stream handler given a
send callback, holding no thread while its stream is open). `OnPool` puts a servicer's RPCs on a
pool of their own, so that RPCs which wait (a SmokeTest's fresh run of the checks, an
application's slow handler) can never take the threads a health probe's Check needs. A wrapper
of a handler's function keeps both attributes with `keep_hooks`, or grpcio silently drops them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

HOOKS = ("experimental_thread_pool", "experimental_non_blocking")

F = TypeVar("F", bound=Callable[..., Any])


def keep_hooks(wrapped: F, behavior: Callable[..., Any]) -> F:
    """`wrapped` (which calls `behavior`), with grpcio's attributes of `behavior`."""
    for hook in HOOKS:
        if hasattr(behavior, hook):
            setattr(wrapped, hook, getattr(behavior, hook))
    return wrapped


def on_pool(behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    """`behavior`, run by grpc's thread-pool server on `pool`."""

    def run(*args: Any) -> Any:
        return behavior(*args)

    keep_hooks(run, behavior)
    run.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return run


class OnPool:
    """`servicer` with its RPC methods on `pool`, for the generated `add_..._to_server`."""

    def __init__(self, servicer: object, pool: futures.ThreadPoolExecutor) -> None:
        self._servicer = servicer
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._servicer, name)
        return on_pool(found, self._pool) if callable(found) else found
