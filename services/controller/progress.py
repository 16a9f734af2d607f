"""Progress of a long Heketi operation, logged while the RPC that started it waits."""

from __future__ import annotations

from collections.abc import Callable

from services.common.rpc import RpcContext


def progress_logger(ctx: RpcContext, operation: str, name: str,
                    every: float = 5.0) -> Callable[[float], None]:
    """An on_progress callback that logs a waiting line every `every` seconds, not per poll."""
    logged = 0.0

    def report(elapsed: float) -> None:
        nonlocal logged
        if elapsed - logged >= every:
            logged = elapsed
            ctx.log.info("waiting for Heketi", operation=operation, name=name,
                         elapsed_s=round(elapsed, 1))

    return report
