"""Prometheus metrics of the controller's work with Heketi."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HEKETI_REQUESTS = Counter(
    "heketi_csi_heketi_requests_total",
    "HTTP requests sent to Heketi, by backend, method and HTTP status (or transport failure)",
    ["backend", "method", "status"],
)
HEKETI_OPERATIONS = Histogram(
    "heketi_csi_heketi_operation_seconds",
    "Asynchronous Heketi operations (create, delete, expand, clone) from request to result, "
    "including time queued in the driver",
    ["backend", "operation", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
HEKETI_THROTTLED = Counter(
    "heketi_csi_heketi_throttled_total", "429 answers received from Heketi", ["backend"]
)
HEKETI_INFLIGHT = Gauge(
    "heketi_csi_heketi_operations_in_flight",
    "Mutating Heketi operations holding one of the driver's slots", ["backend"]
)
INDEX_VOLUMES = Gauge(
    "heketi_csi_index_volumes", "Volumes and snapshots of this driver known per backend",
    ["backend"]
)
