"""Prometheus metrics of the node plugin's own work (RPC metrics are in services.common)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REPAIRS = Counter(
    "heketi_csi_node_repairs_total",
    "Repairs of staged volumes whose gluster client was gone: 'remounted' (stage re-mounted "
    "and targets re-bound), 'rebound' (only targets re-bound), 'failed'",
    ["outcome"],
)

ABNORMAL = Gauge(
    "heketi_csi_node_abnormal_volumes",
    "Staged volumes the last health pass found abnormal (client gone, stopped, hung, cut "
    "off from its quorum, or degraded: some bricks unreachable)",
)
