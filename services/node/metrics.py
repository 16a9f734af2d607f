"""Prometheus metrics of the node plugin's own work (RPC metrics are in services.common)."""

from __future__ import annotations

from prometheus_client import Counter

REPAIRS = Counter(
    "heketi_csi_node_repairs_total",
    "Repairs of staged volumes whose gluster client was gone: 'remounted' (stage re-mounted "
    "and targets re-bound), 'rebound' (only targets re-bound), 'failed'",
    ["outcome"],
)
