"""Prometheus metrics shared by the processes, and a small aiohttp /metrics server."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

RPC_TOTAL = Counter(
    "heketi_csi_rpc_total", "gRPC calls served, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "heketi_csi_rpc_duration_seconds", "gRPC call latency", ["method"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


async def metrics_handler(_request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_metrics_server(port: int, host: str = "0.0.0.0") -> web.AppRunner | None:
    """Serve /metrics on `port`; returns the runner to clean up, or None when port is 0."""
    if port == 0:
        return None
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
